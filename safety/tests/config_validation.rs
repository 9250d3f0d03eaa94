//! A bad safety config is refused at start with an error that names the key and the fix.

mod common;

use common::*;
use reflex_safety::*;

fn refused(cfg: SafetyConfig, key: &str) -> String {
    let err = Safety::new(cfg).expect_err("config must be refused");
    assert_eq!(err.key, key, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("`safety.{key}`")) && text.contains("fix:"),
        "{text}"
    );
    text
}

#[test]
fn the_test_config_is_valid() {
    Safety::new(config()).unwrap();
}

#[test]
fn negative_deceleration_is_refused() {
    refused(
        config_with("base", "brake_decel_mps2", "-1.0"),
        "base.brake_decel_mps2",
    );
    refused(
        config_with("base", "brake_decel_wz_radps2", "0.0"),
        "base.brake_decel_wz_radps2",
    );
    refused(
        config_with("base", "max_accel_x_mps2", "nan"),
        "base.max_accel_x_mps2",
    );
}

#[test]
fn empty_footprint_is_refused() {
    let mut cfg = config();
    cfg.base.as_mut().unwrap().footprint_polygon_m = None;
    refused(cfg, "base.footprint_polygon_m");
    refused(
        config_with("base", "footprint_polygon_m", "[]"),
        "base.footprint_polygon_m",
    );
    refused(
        config_with(
            "base",
            "footprint_polygon_m",
            "[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]",
        ),
        "base.footprint_polygon_m",
    );
}

#[test]
fn non_convex_or_off_origin_footprint_is_refused() {
    let text = refused(
        config_with(
            "base",
            "footprint_polygon_m",
            "[[0.3, 0.2], [0.0, 0.0], [-0.3, 0.2], [-0.3, -0.2], [0.3, -0.2]]",
        ),
        "base.footprint_polygon_m",
    );
    assert!(text.contains("convex"), "{text}");
    refused(
        config_with(
            "base",
            "footprint_polygon_m",
            "[[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]",
        ),
        "base.footprint_polygon_m",
    );
}

#[test]
fn zone_no_larger_than_the_footprint_is_refused() {
    refused(config_with("lidar", "margin_m", "0.0"), "lidar.margin_m");
}

#[test]
fn missing_estop_source_is_refused() {
    let text = refused(
        config_with(
            "estop",
            "sources",
            r#"[{ name = "hardware" }, { name = "internal" }]"#,
        ),
        "estop.sources",
    );
    assert!(text.contains("watchdog"), "{text}");
    refused(config_with("estop", "sources", "[]"), "estop.sources");
    refused(
        config_with(
            "estop",
            "sources",
            r#"[{ name = "watchdog" }, { name = "internal" }, { name = "watchdog" }]"#,
        ),
        "estop.sources[2].name",
    );
}

#[test]
fn other_bad_values_name_their_key() {
    refused(
        config_with("estop", "stop_category", "3"),
        "estop.stop_category",
    );
    refused(
        config_with("commands", "cloud_max_age_ms", "0.0"),
        "commands.cloud_max_age_ms",
    );
    refused(config_with("lidar", "min_points", "0"), "lidar.min_points");
    refused(
        config_with("lidar", "max_invalid_fraction", "1.5"),
        "lidar.max_invalid_fraction",
    );
    refused(config_with("lidar", "max_beams", "0"), "lidar.max_beams");
    refused(
        config_with(
            "lidar",
            "base_from_lidar",
            "{ x_m = 2.0, y_m = 0.0, yaw_rad = 0.0 }",
        ),
        "lidar.base_from_lidar",
    );
    let mut cfg = config();
    cfg.lidar = None;
    refused(cfg, "lidar");
    let mut cfg = config();
    cfg.arm.as_mut().unwrap().joints[1].max_position = -5.0;
    refused(cfg, "arm.joints[1].min_position");
    let mut cfg = config();
    cfg.base = None;
    cfg.arm = None;
    cfg.lidar = None;
    refused(cfg, "base");
}

#[test]
fn unknown_keys_are_refused_by_the_parser() {
    let text = format!("{CONFIG}\n[extra]\nx = 1\n");
    let err = toml::from_str::<SafetyConfig>(&text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("extra"), "{err}");
    let text = CONFIG.replace("margin_m = 0.05", "margin_m = 0.05\nmargn_m = 0.05");
    let err = toml::from_str::<SafetyConfig>(&text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("margn_m"), "{err}");
}

#[test]
fn circular_footprint_is_accepted() {
    let mut cfg = config();
    let base = cfg.base.as_mut().unwrap();
    base.footprint_polygon_m = None;
    base.footprint_radius_m = Some(0.3);
    Safety::new(cfg).unwrap();
}

fn arm_with(lines: &str) -> SafetyConfig {
    let workspace = "workspace = { min_m = [0.1, -0.5, 0.0], max_m = [0.8, 0.5, 1.0] }\n";
    toml::from_str(&CONFIG.replace(workspace, lines)).unwrap_or_else(|e| panic!("{e}"))
}

const CHAIN: &str = r#"tool = { xyz_m = [0.3, 0.0, 0.0], radius_m = 0.05 }, links = [
    { joint = "shoulder", xyz_m = [0.0, 0.0, 0.2], axis = [0.0, 0.0, 1.0], radius_m = 0.05 },
    { joint = "elbow", xyz_m = [0.3, 0.0, 0.0], axis = [0.0, 1.0, 0.0], radius_m = 0.05 },
]"#;

#[test]
fn arm_zones_and_kinematics_are_checked() {
    Safety::new(arm_with(&format!("kinematics = {{ {CHAIN} }}\n"))).unwrap();
    let text = refused(
        arm_with("keep_out = [{ min_m = [0.0, 0.0, 0.0], max_m = [0.1, 0.1, 0.1] }]\n"),
        "arm.keep_out",
    );
    assert!(text.contains("kinematics"), "{text}");
    refused(
        arm_with(&format!(
            "kinematics = {{ {} }}\n",
            CHAIN.replace("\"elbow\"", "\"wrist\"")
        )),
        "arm.kinematics.links[1].joint",
    );
    refused(
        arm_with(&format!(
            "kinematics = {{ {} }}\n",
            CHAIN.replace("[0.0, 1.0, 0.0]", "[0.0, 2.0, 0.0]")
        )),
        "arm.kinematics.links[1].axis",
    );
    refused(
        arm_with(&format!(
            "kinematics = {{ {} }}\nkeep_out = [{{ min_m = [0.2, 0.0, 0.0], max_m = [0.1, 0.1, 0.1] }}]\n",
            CHAIN
        )),
        "arm.keep_out[0].min_m",
    );
    refused(
        arm_with(&format!(
            "kinematics = {{ {} }}\n",
            CHAIN.replacen("radius_m = 0.05 },\n", "radius_m = -0.05 },\n", 1)
        )),
        "arm.kinematics.links[0].radius_m",
    );
    // A zero radius models no link.
    refused(
        arm_with(&format!(
            "kinematics = {{ {} }}\n",
            CHAIN.replacen("radius_m = 0.05 },\n", "radius_m = 0.0 },\n", 1)
        )),
        "arm.kinematics.links[0].radius_m",
    );
    // The base (the first joint, which never moves) outside the workspace or under a box: that
    // link would be in a zone for ever.
    let text = refused(
        arm_with(&format!(
            "kinematics = {{ {CHAIN} }}\nworkspace = {{ min_m = [0.1, -0.5, 0.0], max_m = [0.8, 0.5, 1.0] }}\n"
        )),
        "arm.kinematics.links[0].xyz_m",
    );
    assert!(text.contains("workspace"), "{text}");
    refused(
        arm_with(&format!(
            "kinematics = {{ {CHAIN} }}\nkeep_out = [{{ min_m = [-0.1, -0.1, 0.0], max_m = [0.1, 0.1, 0.3] }}]\n"
        )),
        "arm.keep_out[0]",
    );
    // A prismatic joint offset from its slide is not a straight capsule: refused with the fix;
    // along its axis it loads.
    let slide = |xyz: &str| {
        arm_with(&format!(
            "kinematics = {{ {} }}\n",
            CHAIN.replace(
                "{ joint = \"elbow\", xyz_m = [0.3, 0.0, 0.0], axis = [0.0, 1.0, 0.0]",
                &format!("{{ joint = \"elbow\", type = \"prismatic\", xyz_m = {xyz}, axis = [1.0, 0.0, 0.0]")
            )
        ))
    };
    Safety::new(slide("[0.3, 0.0, 0.0]")).unwrap();
    let text = refused(slide("[0.3, 0.1, 0.0]"), "arm.kinematics.links[1].xyz_m");
    assert!(text.contains("prismatic"), "{text}");
}

#[test]
fn arm_stall_detection_is_checked() {
    let with = |min_error: f64, time_ms: f64, following: Option<f64>| {
        let mut cfg = config();
        let arm = cfg.arm.as_mut().unwrap();
        arm.max_following_error = following;
        arm.stall = Some(reflex_safety::StallConfig { min_error, time_ms });
        cfg
    };
    Safety::new(with(0.02, 300.0, Some(0.2))).unwrap();
    // A stall latches; without the following-error bound the hold would not yield to a push.
    let text = refused(with(0.02, 300.0, None), "arm.stall");
    assert!(text.contains("max_following_error"), "{text}");
    refused(with(0.0, 300.0, None), "arm.stall.min_error");
    refused(with(f64::NAN, 300.0, None), "arm.stall.min_error");
    refused(with(0.02, 0.0, None), "arm.stall.time_ms");
    refused(with(0.02, f64::INFINITY, None), "arm.stall.time_ms");
    // The following-error stop would always come first.
    let text = refused(with(0.3, 300.0, Some(0.2)), "arm.stall.min_error");
    assert!(text.contains("max_following_error"), "{text}");
}

#[test]
fn arm_separation_is_checked() {
    // Valid on a mobile manipulator and on an arm alone (the lidar then serves only it).
    Safety::new(separated(false)).unwrap();
    Safety::new(separated(true)).unwrap();
    // A lidar with neither a base nor SAF-017 to use it.
    let mut cfg = separated(true);
    cfg.arm.as_mut().unwrap().separation = None;
    let text = refused(cfg, "lidar");
    assert!(text.contains("arm.separation"), "{text}");
    // SAF-017 measures to the links: it needs the chain, and a lidar.
    let mut cfg = separated(false);
    cfg.arm.as_mut().unwrap().kinematics = None;
    cfg.arm.as_mut().unwrap().workspace = None;
    let text = refused(cfg, "arm.separation");
    assert!(text.contains("kinematics"), "{text}");
    let mut cfg = separated(true);
    cfg.lidar = None;
    let text = refused(cfg, "arm.separation");
    assert!(text.contains("[safety.lidar]"), "{text}");
    let with = |f: &dyn Fn(&mut SeparationConfig)| {
        let mut cfg = separated(true);
        f(cfg.arm.as_mut().unwrap().separation.as_mut().unwrap());
        cfg
    };
    refused(
        with(&|s| s.human_speed_mps = 0.0),
        "arm.separation.human_speed_mps",
    );
    refused(
        with(&|s| s.human_speed_mps = f64::NAN),
        "arm.separation.human_speed_mps",
    );
    refused(
        with(&|s| s.human_speed_mps = 100.0),
        "arm.separation.human_speed_mps",
    );
    refused(with(&|s| s.margin_m = 0.0), "arm.separation.margin_m");
    // Finite but beyond what f32 scan geometry holds: refused, never projected to NaN.
    refused(
        with(&|s| s.base_from_arm.x_m = 1e300),
        "arm.separation.base_from_arm",
    );
    refused(
        with(&|s| s.reaction_time_ms = 1e300),
        "arm.separation.reaction_time_ms",
    );
    refused(
        with(&|s| s.reaction_time_ms = -1.0),
        "arm.separation.reaction_time_ms",
    );
    refused(
        with(&|s| s.base_from_arm.yaw_rad = f64::INFINITY),
        "arm.separation.base_from_arm",
    );
    // The lidar's own checks hold without a base too.
    let mut cfg = separated(true);
    cfg.lidar.as_mut().unwrap().max_beams = 0;
    refused(cfg, "lidar.max_beams");
    // From TOML, as a config file spells it.
    let toml_text = format!(
        "{}\n[arm.separation]\nbase_from_arm = {{ x_m = 0.1, y_m = 0.0, yaw_rad = 0.0 }}\nhuman_speed_mps = 1.6\nreaction_time_ms = 60.0\nmargin_m = 0.3\n",
        CONFIG.replace(
            "workspace = { min_m = [0.1, -0.5, 0.0], max_m = [0.8, 0.5, 1.0] }\n",
            ZONED
        )
    );
    let cfg: SafetyConfig = toml::from_str(&toml_text).unwrap();
    assert_eq!(cfg.arm.as_ref().unwrap().separation.unwrap().margin_m, 0.3);
    Safety::new(cfg).unwrap();
}

#[test]
fn a_taught_background_is_checked() {
    let background = || BackgroundConfig {
        base_from_lidar: separated(true).lidar.unwrap().base_from_lidar,
        angle_min_rad: -std::f64::consts::PI,
        angle_increment_rad: std::f64::consts::TAU / BEAMS as f64,
        tolerance_m: 0.03,
        ranges_m: vec![3.0; BEAMS],
    };
    let with = |f: &dyn Fn(&mut BackgroundConfig)| {
        let mut cfg = separated(true);
        let mut b = background();
        f(&mut b);
        cfg.lidar.as_mut().unwrap().background = Some(b);
        cfg
    };
    Safety::new(with(&|_| {})).unwrap();
    // A mobile base's lidar sees another scene wherever the base drives.
    let mut cfg = separated(false);
    cfg.lidar.as_mut().unwrap().background = Some(background());
    let text = refused(cfg, "lidar.background");
    assert!(text.contains("mobile base"), "{text}");
    let text = refused(
        with(&|b| b.tolerance_m = 0.2),
        "lidar.background.tolerance_m",
    );
    assert!(text.contains("person"), "{text}");
    refused(
        with(&|b| b.tolerance_m = 0.0),
        "lidar.background.tolerance_m",
    );
    let text = refused(
        with(&|b| b.ranges_m = vec![3.0; 2 * BEAMS]),
        "lidar.background.ranges_m",
    );
    assert!(text.contains("teach-background"), "{text}");
    refused(with(&|b| b.ranges_m.clear()), "lidar.background.ranges_m");
    let text = refused(with(&|b| b.ranges_m[7] = -1.0), "lidar.background.ranges_m");
    assert!(text.contains("beam 7"), "{text}");
    refused(with(&|b| b.ranges_m.fill(0.0)), "lidar.background.ranges_m");
    // A range inside its own band (at the scanner).
    let text = refused(with(&|b| b.ranges_m[3] = 0.02), "lidar.background.ranges_m");
    assert!(text.contains("beam 3"), "{text}");
    // Taught with the scanner elsewhere than the config now puts it.
    let text = refused(
        with(&|b| b.base_from_lidar.x_m += 0.05),
        "lidar.background.base_from_lidar",
    );
    assert!(text.contains("moved"), "{text}");
    refused(
        with(&|b| b.angle_increment_rad = 0.0),
        "lidar.background.angle_increment_rad",
    );
}
