//! `sensor_msgs/msg/LaserScan` messages from an MCAP file: a rosbag2 recording
//! (`ros2 bag record -s mcap /scan`) or a Reflex flight recording. For `reflex
//! teach-background` (SAF-019), which teaches a cell's static returns from them.

use std::path::Path;

use anyhow::{Context as _, Result};
use reflex_ros::port::LaserScan;

/// Every message on `topic`, in file order; an error names the file, the message and the fix.
pub fn read_scans(path: &Path, topic: &str) -> Result<Vec<LaserScan>> {
    let buf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let stream = mcap::MessageStream::new(&buf)
        .with_context(|| format!("{}: not a readable MCAP file", path.display()))?;
    let mut scans = Vec::new();
    let mut topics = std::collections::BTreeSet::new();
    for (i, message) in stream.enumerate() {
        let m = message.with_context(|| {
            format!(
                "{}: message {i} is damaged (an unfinished recording?)",
                path.display()
            )
        })?;
        if m.channel.topic != topic {
            topics.insert(m.channel.topic.clone());
            continue;
        }
        anyhow::ensure!(
            m.channel.message_encoding == "cdr",
            "{}: {topic} is {:?}-encoded; ROS 2 recordings are \"cdr\"; fix: record the scanner with `ros2 bag record -s mcap {topic}`",
            path.display(),
            m.channel.message_encoding
        );
        if let Some(schema) = &m.channel.schema {
            anyhow::ensure!(
                schema.name == "sensor_msgs/msg/LaserScan",
                "{}: {topic} carries {}, not sensor_msgs/msg/LaserScan; fix: pass the scanner's topic with --topic",
                path.display(),
                schema.name
            );
        }
        let scan: LaserScan = reflex_ros::port::cdr::decode(&m.data).map_err(|e| {
            anyhow::anyhow!(
                "{}: message {i} on {topic} is not a LaserScan: {e}",
                path.display()
            )
        })?;
        scans.push(scan);
    }
    anyhow::ensure!(
        !scans.is_empty(),
        "{}: no messages on {topic} (the file has {}); fix: record the scanner (`ros2 bag record -s mcap {topic}`), or pass its topic with --topic",
        path.display(),
        if topics.is_empty() {
            "no messages".to_string()
        } else {
            topics.into_iter().collect::<Vec<_>>().join(", ")
        }
    );
    Ok(scans)
}
