//! Camera frame → image input, as the input's `preprocess` says (schema 2; schema 1 images use
//! the defaults): resize (nearest or bilinear), fit (stretch, center crop, letterbox), layout
//! (NCHW or NHWC), dtype (uint8 bytes, or float32 `(pixel / 255 - mean) / std`). Runs on the
//! robot I/O thread and in the simulator, writing into the observation's preallocated buffer.

use crate::manifest::{Dtype, ImageFit, ImageLayout, InputSpec, ResizeMethod};
use reflex_core::ImageData;

/// An 8-bit, 3-channel camera frame (`sensor_msgs/Image` rgb8 or bgr8).
#[derive(Debug, Clone, Copy)]
pub struct RgbFrame<'a> {
    pub width: usize,
    pub height: usize,
    /// Bytes per row (≥ 3 × width).
    pub step: usize,
    /// Channel order blue, green, red (`bgr8`).
    pub bgr: bool,
    pub data: &'a [u8],
}

impl RgbFrame<'_> {
    /// Whether the frame's fields describe its data (non-empty, rows inside the buffer).
    pub fn is_well_formed(&self) -> bool {
        self.width > 0
            && self.height > 0
            && self.step >= self.width * 3
            && self.data.len() >= self.step * self.height
    }
}

/// One axis of the mapping: output pixels `pad .. pad + len_dst` show source pixels
/// `origin .. origin + len_src`; the rest is padding.
#[derive(Debug, Clone, Copy)]
struct Axis {
    pad: usize,
    len_dst: usize,
    origin: f64,
    len_src: f64,
    src_len: usize,
}

impl Axis {
    /// Source coordinate of output pixel `x`, or None in the padding.
    fn nearest(&self, x: usize) -> Option<usize> {
        let rel = x.checked_sub(self.pad).filter(|r| *r < self.len_dst)?;
        let u = self.origin + (rel as f64 * self.len_src) / self.len_dst as f64;
        Some((u.floor().max(0.0) as usize).min(self.src_len - 1))
    }

    /// The two source pixels and the weight of the second, or None in the padding.
    fn bilinear(&self, x: usize) -> Option<(usize, usize, f32)> {
        let rel = x.checked_sub(self.pad).filter(|r| *r < self.len_dst)?;
        let u = self.origin + (rel as f64 + 0.5) * self.len_src / self.len_dst as f64 - 0.5;
        let u = u.clamp(0.0, (self.src_len - 1) as f64);
        let x0 = u.floor() as usize;
        let x1 = (x0 + 1).min(self.src_len - 1);
        Some((x0, x1, (u - x0 as f64) as f32))
    }
}

/// The mapping of both axes for a `src` frame into an `h × w` input.
fn axes(fit: ImageFit, src: (usize, usize), dst: (usize, usize)) -> (Axis, Axis) {
    let (ih, iw) = (src.0 as f64, src.1 as f64);
    let (h, w) = (dst.0 as f64, dst.1 as f64);
    let stretch = |src_len: usize, dst_len: usize| Axis {
        pad: 0,
        len_dst: dst_len,
        origin: 0.0,
        len_src: src_len as f64,
        src_len,
    };
    match fit {
        ImageFit::Stretch => (stretch(src.0, dst.0), stretch(src.1, dst.1)),
        ImageFit::CenterCrop => {
            // Source pixels per output pixel: the smaller ratio, so the frame covers the input.
            let s = (ih / h).min(iw / w);
            let axis = |src_len: usize, dst_len: usize| {
                let len_src = dst_len as f64 * s;
                Axis {
                    pad: 0,
                    len_dst: dst_len,
                    origin: (src_len as f64 - len_src) / 2.0,
                    len_src,
                    src_len,
                }
            };
            (axis(src.0, dst.0), axis(src.1, dst.1))
        }
        ImageFit::Letterbox => {
            // The larger ratio, so the whole frame fits; sizes truncated as openpi's
            // `resize_with_pad` does, the padding split with the extra pixel after.
            let s = (ih / h).max(iw / w);
            let axis = |src_len: usize, dst_len: usize| {
                let len_dst = ((src_len as f64 / s) as usize).clamp(1, dst_len);
                Axis {
                    pad: (dst_len - len_dst) / 2,
                    len_dst,
                    origin: 0.0,
                    len_src: src_len as f64,
                    src_len,
                }
            };
            (axis(src.0, dst.0), axis(src.1, dst.1))
        }
    }
}

/// Writes `frame` into `dst` as `spec` (an image input) takes it. False, with nothing
/// written, when the frame is malformed or `dst` does not have the input's dtype and size.
pub fn fill_image(frame: &RgbFrame<'_>, spec: &InputSpec, dst: &mut ImageData) -> bool {
    let p = spec.image_preprocess();
    let (h, w) = spec.image_size();
    let n = 3 * h * w;
    let ok_dst = match dst {
        ImageData::U8(d) => d.len() == n && spec.dtype == Dtype::Uint8,
        ImageData::F32(d) => d.len() == n && spec.dtype == Dtype::Float32,
    };
    if !frame.is_well_formed() || !ok_dst || h == 0 || w == 0 {
        return false;
    }
    let (ay, ax) = axes(p.fit, (frame.height, frame.width), (h, w));
    let mean = p.mean.unwrap_or([0.0; 3]);
    let std = p.std.unwrap_or([1.0; 3]);
    let index = |c: usize, y: usize, x: usize| match p.layout {
        ImageLayout::Nchw => c * h * w + y * w + x,
        ImageLayout::Nhwc => (y * w + x) * 3 + c,
    };
    let channel = |c: usize| if frame.bgr { 2 - c } else { c };
    let px = |y: usize, x: usize, c: usize| frame.data[y * frame.step + x * 3 + channel(c)] as f32;
    for y in 0..h {
        for x in 0..w {
            // RGB value of output pixel (x, y), 0 in the letterbox padding.
            let mut rgb = [0.0f32; 3];
            match p.resize {
                ResizeMethod::Nearest => {
                    if let (Some(sy), Some(sx)) = (ay.nearest(y), ax.nearest(x)) {
                        for (c, v) in rgb.iter_mut().enumerate() {
                            *v = px(sy, sx, c);
                        }
                    }
                }
                ResizeMethod::Bilinear => {
                    if let (Some((y0, y1, fy)), Some((x0, x1, fx))) =
                        (ay.bilinear(y), ax.bilinear(x))
                    {
                        for (c, v) in rgb.iter_mut().enumerate() {
                            let top = px(y0, x0, c) * (1.0 - fx) + px(y0, x1, c) * fx;
                            let bottom = px(y1, x0, c) * (1.0 - fx) + px(y1, x1, c) * fx;
                            *v = top * (1.0 - fy) + bottom * fy;
                        }
                    }
                }
            }
            match dst {
                ImageData::U8(d) => {
                    for (c, v) in rgb.iter().enumerate() {
                        d[index(c, y, x)] = v.round().clamp(0.0, 255.0) as u8;
                    }
                }
                ImageData::F32(d) => {
                    for (c, v) in rgb.iter().enumerate() {
                        d[index(c, y, x)] = (v / 255.0 - mean[c]) / std[c];
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImagePreprocess, InputRole};

    fn spec(dtype: Dtype, shape: Vec<i64>, p: ImagePreprocess) -> InputSpec {
        InputSpec {
            name: "cam".into(),
            dtype,
            shape,
            role: InputRole::Image,
            preprocess: Some(p),
            generator: None,
        }
    }

    /// A `w × h` rgb8 frame whose red channel is the column, green the row, blue 7.
    fn gradient(w: usize, h: usize) -> Vec<u8> {
        let mut d = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                d.extend_from_slice(&[x as u8, y as u8, 7]);
            }
        }
        d
    }

    #[test]
    fn letterbox_pads_the_short_axis_and_keeps_the_aspect_ratio() {
        // 8×4 frame into 4×4: scaled by 1/2 to 4×2, rows 1..3 hold it, rows 0 and 3 black.
        let data = gradient(8, 4);
        let frame = RgbFrame {
            width: 8,
            height: 4,
            step: 24,
            bgr: false,
            data: &data,
        };
        let s = spec(
            Dtype::Uint8,
            vec![1, 4, 4, 3],
            ImagePreprocess {
                layout: ImageLayout::Nhwc,
                fit: ImageFit::Letterbox,
                ..ImagePreprocess::default()
            },
        );
        let mut dst = ImageData::U8(vec![9; 48]);
        assert!(fill_image(&frame, &s, &mut dst));
        let ImageData::U8(d) = dst else {
            unreachable!()
        };
        let at = |y: usize, x: usize| &d[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3];
        assert_eq!(at(0, 0), [0, 0, 0], "padding is black");
        assert_eq!(at(3, 3), [0, 0, 0]);
        // Row 1 shows source row 0, column x shows source column 2x (nearest).
        assert_eq!(at(1, 0), [0, 0, 7]);
        assert_eq!(at(1, 3), [6, 0, 7]);
        assert_eq!(at(2, 2), [4, 2, 7]);
    }

    #[test]
    fn center_crop_keeps_the_middle_and_bilinear_interpolates() {
        // 8×4 frame into 2×2 float32 NCHW, cropped to the middle 4×4 (columns 2..6), bilinear:
        // output column 0 samples source column 2 + 0.5·2 − 0.5 = 2.5, row 0 samples row 0.5.
        let data = gradient(8, 4);
        let frame = RgbFrame {
            width: 8,
            height: 4,
            step: 24,
            bgr: false,
            data: &data,
        };
        let s = spec(
            Dtype::Float32,
            vec![1, 3, 2, 2],
            ImagePreprocess {
                resize: ResizeMethod::Bilinear,
                fit: ImageFit::CenterCrop,
                mean: Some([0.0, 0.0, 0.5]),
                std: Some([1.0, 1.0, 0.25]),
                ..ImagePreprocess::default()
            },
        );
        let mut dst = ImageData::F32(vec![0.0; 12]);
        assert!(fill_image(&frame, &s, &mut dst));
        let ImageData::F32(d) = dst else {
            unreachable!()
        };
        let close = |got: f32, want: f32| assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        close(d[0], 2.5 / 255.0); // red, (0, 0)
        close(d[1], 4.5 / 255.0); // red, (0, 1)
        close(d[4], 0.5 / 255.0); // green, (0, 0)
        close(d[6], 2.5 / 255.0); // green, (1, 0)
        close(d[8], (7.0 / 255.0 - 0.5) / 0.25); // blue, normalized
    }

    #[test]
    fn bgr_frames_are_swapped_and_malformed_frames_write_nothing() {
        let data = [1u8, 2, 3];
        let frame = RgbFrame {
            width: 1,
            height: 1,
            step: 3,
            bgr: true,
            data: &data,
        };
        let s = spec(Dtype::Uint8, vec![1, 3, 1, 1], ImagePreprocess::default());
        let mut dst = ImageData::U8(vec![0; 3]);
        assert!(fill_image(&frame, &s, &mut dst));
        assert_eq!(dst, ImageData::U8(vec![3, 2, 1]));
        let short = RgbFrame { step: 2, ..frame };
        let mut untouched = ImageData::U8(vec![5; 3]);
        assert!(!fill_image(&short, &s, &mut untouched));
        assert_eq!(untouched, ImageData::U8(vec![5; 3]));
        // A buffer of the wrong dtype for the input is refused too.
        let mut wrong = ImageData::F32(vec![0.0; 3]);
        assert!(!fill_image(&frame, &s, &mut wrong));
    }
}
