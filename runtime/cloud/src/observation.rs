//! `[cloud.observation]`: what the policy server is sent, made from the local policy's own
//! camera inputs and state sources. openpi servers take per-deployment keys and layouts (DROID:
//! `observation/exterior_image_1_left` and `observation/wrist_image_left`, 224 × 224 × 3 uint8
//! resized with padding, `observation/joint_position`, `observation/gripper_position`; LIBERO:
//! `observation/image`, `observation/wrist_image`, `observation/state`), so each key names what
//! it is made of, its size and layout.
//!
//! An image is resampled from the local policy's image input (uint8 as it is; float32 turned
//! back into pixels through the input's mean and std) with [`reflex_policy::image::fill_image`]:
//! the cloud image can be no sharper than that input, and a letterboxed input is letterboxed
//! again. Without `[cloud.observation]` the link sends what it always sent: the whole state as
//! `observation/state` and the first camera, when it is uint8, in the local input's shape as
//! `observation/image`.

use anyhow::{Result, bail, ensure};
use reflex_core::ImageData;
use reflex_policy::image::{RgbFrame, fill_image};
use reflex_policy::{
    Dtype, ImageFit, ImageLayout, ImagePreprocess, InputRole, InputSpec, PolicyManifest,
    ResizeMethod,
};
use rmpv::Value;
use serde::Deserialize;

/// `[cloud.observation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationMap {
    /// `[[cloud.observation.images]]`, one per image key.
    #[serde(default)]
    pub images: Vec<CloudImage>,
    /// `[[cloud.observation.state]]`, one per state key.
    #[serde(default)]
    pub state: Vec<CloudState>,
    /// The key of the task instruction (`prompt`).
    #[serde(default = "default_prompt_key")]
    pub prompt_key: String,
}

fn default_prompt_key() -> String {
    "prompt".into()
}

/// One image the server is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudImage {
    pub key: String,
    /// The local policy's image input it is made from (`inputs[].name` in policy.json).
    pub camera: String,
    pub height: usize,
    pub width: usize,
    /// `hwc` (`[H, W, 3]`, openpi's) or `chw`.
    #[serde(default)]
    pub layout: CloudLayout,
    /// `letterbox` (openpi's `resize_with_pad`, the default), `center_crop` or `stretch`.
    #[serde(default = "letterbox")]
    pub fit: ImageFit,
    /// `bilinear` (the default) or `nearest`.
    #[serde(default = "bilinear")]
    pub resize: ResizeMethod,
}

fn letterbox() -> ImageFit {
    ImageFit::Letterbox
}
fn bilinear() -> ResizeMethod {
    ResizeMethod::Bilinear
}

/// Layout of a cloud image (no batch axis: openpi adds its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudLayout {
    #[default]
    Hwc,
    Chw,
}

/// One float32 vector the server is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudState {
    pub key: String,
    /// Entries of the local policy's `state_sources` (`joint_position/<joint>`,
    /// `gripper_position`, …), in the order the server wants them.
    pub sources: Vec<String>,
}

/// The newest observation for the cloud (written by the robot-I/O thread, never the RT thread):
/// the local policy's observation as its backend gets it.
#[derive(Debug, Clone, Default)]
pub struct CloudObservation {
    pub t_obs_ns: u64,
    /// Physical units, in `state_sources` order.
    pub state: Vec<f32>,
    /// One per image input of the local policy, in input order, as that input takes it.
    pub images: Vec<ImageData>,
}

#[derive(Debug, Clone)]
enum ImageOut {
    /// The local input's tensor as it is (uint8 only), with its shape.
    AsIs {
        key: String,
        local: usize,
        shape: Vec<i64>,
    },
    Resampled {
        key: String,
        local: usize,
        local_spec: Box<InputSpec>,
        spec: Box<InputSpec>,
        shape: [i64; 3],
    },
}

/// `[cloud.observation]` resolved against the local policy.
#[derive(Debug, Clone)]
pub struct Mapping {
    images: Vec<ImageOut>,
    state: Vec<(String, Vec<usize>)>,
    prompt_key: String,
}

impl Mapping {
    /// The mapping `map` describes (None: the default), checked against `manifest`: every
    /// camera and state source must be the local policy's; the error names the key and lists
    /// what there is.
    pub fn resolve(map: Option<&ObservationMap>, manifest: &PolicyManifest) -> Result<Self> {
        let cameras: Vec<&InputSpec> = manifest.image_inputs().collect();
        let sources = manifest.state_sources();
        let Some(map) = map else {
            let mut images = Vec::new();
            if let Some(first) = cameras.first()
                && first.dtype == Dtype::Uint8
            {
                images.push(ImageOut::AsIs {
                    key: "observation/image".into(),
                    local: 0,
                    shape: first.shape.clone(),
                });
            }
            return Ok(Self {
                images,
                state: vec![("observation/state".into(), (0..sources.len()).collect())],
                prompt_key: default_prompt_key(),
            });
        };
        let mut keys: Vec<&str> = vec![map.prompt_key.as_str()];
        let check_key = |what: String, key: &'static str, k: &str| -> Result<()> {
            ensure!(
                !k.is_empty(),
                "{what}.{key} is empty; fix: the key the policy server reads"
            );
            Ok(())
        };
        check_key("cloud.observation".into(), "prompt_key", &map.prompt_key)?;
        let mut images = Vec::new();
        for (i, im) in map.images.iter().enumerate() {
            let what = format!("cloud.observation.images[{i}]");
            check_key(what.clone(), "key", &im.key)?;
            ensure!(
                !keys.contains(&im.key.as_str()),
                "{what}.key = {:?}: used twice; fix: one key per entry",
                im.key
            );
            keys.push(&im.key);
            let Some(local) = cameras.iter().position(|c| c.name == im.camera) else {
                bail!(
                    "{what}.camera = {:?}: the policy `{}` has no such image input; fix: one of {:?}",
                    im.camera,
                    manifest.name,
                    cameras.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
                );
            };
            ensure!(
                (1..=4096).contains(&im.height) && (1..=4096).contains(&im.width),
                "{what}: {} × {} pixels; fix: height and width in 1..=4096 (DROID: 224 × 224)",
                im.height,
                im.width
            );
            let (h, w) = (im.height as i64, im.width as i64);
            let (shape, tensor, layout) = match im.layout {
                CloudLayout::Hwc => ([h, w, 3], vec![1, h, w, 3], ImageLayout::Nhwc),
                CloudLayout::Chw => ([3, h, w], vec![1, 3, h, w], ImageLayout::Nchw),
            };
            images.push(ImageOut::Resampled {
                key: im.key.clone(),
                local,
                local_spec: Box::new(cameras[local].clone()),
                spec: Box::new(InputSpec {
                    name: im.key.clone(),
                    dtype: Dtype::Uint8,
                    shape: tensor,
                    role: InputRole::Image,
                    preprocess: Some(ImagePreprocess {
                        layout,
                        resize: im.resize,
                        fit: im.fit,
                        mean: None,
                        std: None,
                    }),
                    generator: None,
                }),
                shape,
            });
        }
        let mut state = Vec::new();
        for (i, s) in map.state.iter().enumerate() {
            let what = format!("cloud.observation.state[{i}]");
            check_key(what.clone(), "key", &s.key)?;
            ensure!(
                !keys.contains(&s.key.as_str()),
                "{what}.key = {:?}: used twice; fix: one key per entry",
                s.key
            );
            keys.push(&s.key);
            ensure!(
                !s.sources.is_empty(),
                "{what}.sources is empty; fix: entries of the policy's state_sources, e.g. {:?}",
                sources
            );
            let mut idx = Vec::new();
            for (j, name) in s.sources.iter().enumerate() {
                let Some(k) = sources.iter().position(|x| x == name) else {
                    bail!(
                        "{what}.sources[{j}] = {name:?}: the policy `{}` does not read it (the cloud is sent what the local policy measures); fix: one of {:?}",
                        manifest.name,
                        sources
                    );
                };
                idx.push(k);
            }
            state.push((s.key.clone(), idx));
        }
        ensure!(
            !images.is_empty() || !state.is_empty(),
            "[cloud.observation] sends nothing; fix: add [[cloud.observation.images]] or [[cloud.observation.state]]"
        );
        Ok(Self {
            images,
            state,
            prompt_key: map.prompt_key.clone(),
        })
    }

    /// The msgpack-numpy frame for `obs` (openpi's `msgpack_numpy` encoding), or None when the
    /// observation is not whole (a state entry not finite, an image missing or of the wrong
    /// size): nothing is sent for it, never a guess.
    pub fn encode(&self, obs: &CloudObservation, prompt: &str) -> Result<Option<Vec<u8>>> {
        let mut map = Vec::new();
        for (key, idx) in &self.state {
            let mut bytes = Vec::with_capacity(4 * idx.len());
            for &i in idx {
                let Some(v) = obs.state.get(i).filter(|v| v.is_finite()) else {
                    return Ok(None);
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            map.push((
                Value::from(key.as_str()),
                ndarray(bytes, "<f4", &[idx.len() as i64]),
            ));
        }
        for image in &self.images {
            let (key, data, shape) = match image {
                ImageOut::AsIs { key, local, shape } => match obs.images.get(*local) {
                    Some(ImageData::U8(d)) => (key, d.clone(), shape.clone()),
                    _ => return Ok(None),
                },
                ImageOut::Resampled {
                    key,
                    local,
                    local_spec,
                    spec,
                    shape,
                } => {
                    let Some(src) = obs.images.get(*local) else {
                        return Ok(None);
                    };
                    let Some(rgb) = to_rgb8(local_spec, src) else {
                        return Ok(None);
                    };
                    let (h, w) = local_spec.image_size();
                    let frame = RgbFrame {
                        width: w,
                        height: h,
                        step: 3 * w,
                        bgr: false,
                        data: &rgb,
                    };
                    let mut out = ImageData::U8(vec![0; spec.values()]);
                    if !fill_image(&frame, spec, &mut out) {
                        return Ok(None);
                    }
                    let ImageData::U8(d) = out else {
                        unreachable!("made as uint8")
                    };
                    (key, d, shape.to_vec())
                }
            };
            map.push((Value::from(key.as_str()), ndarray(data, "|u1", &shape)));
        }
        map.push((Value::from(self.prompt_key.as_str()), Value::from(prompt)));
        map.push((Value::from("reflex/t_obs_ns"), Value::from(obs.t_obs_ns)));
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &Value::Map(map))?;
        Ok(Some(out))
    }
}

/// The image `data` of input `spec` as interleaved RGB bytes of the input's size: uint8 read
/// in its layout, float32 turned back into pixels (`(v · std + mean) · 255`). None when `data`
/// does not have the input's size.
pub fn to_rgb8(spec: &InputSpec, data: &ImageData) -> Option<Vec<u8>> {
    let p = spec.image_preprocess();
    let (h, w) = spec.image_size();
    let n = h * w;
    let mean = p.mean.unwrap_or([0.0; 3]);
    let std = p.std.unwrap_or([1.0; 3]);
    let index = |c: usize, i: usize| match p.layout {
        ImageLayout::Nchw => c * n + i,
        ImageLayout::Nhwc => i * 3 + c,
    };
    let mut out = vec![0u8; 3 * n];
    match data {
        ImageData::U8(d) if d.len() == 3 * n => {
            for i in 0..n {
                for c in 0..3 {
                    out[i * 3 + c] = d[index(c, i)];
                }
            }
        }
        ImageData::F32(d) if d.len() == 3 * n => {
            for i in 0..n {
                for c in 0..3 {
                    let v = (d[index(c, i)] * std[c] + mean[c]) * 255.0;
                    out[i * 3 + c] = if v.is_finite() {
                        v.round().clamp(0.0, 255.0) as u8
                    } else {
                        0
                    };
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// An openpi `msgpack_numpy` array.
pub(crate) fn ndarray(data: Vec<u8>, dtype: &str, shape: &[i64]) -> Value {
    Value::Map(vec![
        (Value::Binary(b"__ndarray__".to_vec()), Value::Boolean(true)),
        (Value::Binary(b"data".to_vec()), Value::Binary(data)),
        (Value::Binary(b"dtype".to_vec()), Value::from(dtype)),
        (
            Value::Binary(b"shape".to_vec()),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        ),
    ])
}
