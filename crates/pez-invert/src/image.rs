//! CLIP / OpenCLIP image preprocessing, exactly as torchvision on a PIL image does it: convert to RGB, resize the
//! short side to `size` with PIL's bicubic filter (its fixed-point, two-pass resampler), center crop, scale to
//! [0, 1], normalise with the model's mean and std.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

// CLIP's constants as published (f32 rounds the last digits).
#[allow(clippy::excessive_precision)]
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

pub fn load_rgb(path: &Path) -> Result<Rgb> {
    let img = image::open(path).with_context(|| format!("reading image {}", path.display()))?;
    let rgb = img.to_rgb8();
    Ok(Rgb {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc`: for each output index, (first input index, fixed-point
/// weights).
fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let sum: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if sum != 0.0 { v / sum } else { v };
                    let f = v * (1u64 << PRECISION_BITS) as f64;
                    (if v < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL `Image.resize(..., BICUBIC)` for RGB images: a horizontal pass, then a vertical one, each rounding to 8 bits.
pub fn resize_bicubic(img: &Rgb, width: usize, height: usize) -> Rgb {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut cur = img.clone();
    if width != cur.width {
        let cs = coeffs(cur.width, width);
        let mut out = vec![0u8; width * cur.height * 3];
        for y in 0..cur.height {
            for (xx, (xmin, k)) in cs.iter().enumerate() {
                for c in 0..3 {
                    let mut s = half;
                    for (i, &kv) in k.iter().enumerate() {
                        s += cur.data[(y * cur.width + xmin + i) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * width + xx) * 3 + c] = clip8(s);
                }
            }
        }
        cur = Rgb {
            width,
            height: cur.height,
            data: out,
        };
    }
    if height != cur.height {
        let cs = coeffs(cur.height, height);
        let mut out = vec![0u8; cur.width * height * 3];
        for (yy, (ymin, k)) in cs.iter().enumerate() {
            for x in 0..cur.width {
                for c in 0..3 {
                    let mut s = half;
                    for (i, &kv) in k.iter().enumerate() {
                        s += cur.data[((ymin + i) * cur.width + x) * 3 + c] as i64 * kv as i64;
                    }
                    out[(yy * cur.width + x) * 3 + c] = clip8(s);
                }
            }
        }
        cur = Rgb {
            width: cur.width,
            height,
            data: out,
        };
    }
    cur
}

/// Python's `round` (half to even), as torchvision's center crop uses it.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// torchvision `Resize(size)` (short side to `size`) then `CenterCrop(size)`, as 8-bit RGB.
pub fn resize_and_crop(img: &Rgb, size: usize) -> Rgb {
    let (w, h) = (img.width, img.height);
    let (nw, nh) = if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    };
    let r = resize_bicubic(img, nw, nh);
    let top = round_half_even((nh as f64 - size as f64) / 2.0).max(0) as usize;
    let left = round_half_even((nw as f64 - size as f64) / 2.0).max(0) as usize;
    let mut data = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        let row = (top + y) * nw + left;
        data.extend_from_slice(&r.data[row * 3..(row + size) * 3]);
    }
    Rgb {
        width: size,
        height: size,
        data,
    }
}

/// The model input `[3, size, size]`: `(pixel / 255 - mean) / std`, channels first.
pub fn to_tensor(img: &Rgb, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor> {
    let n = img.width * img.height;
    let mut v = vec![0f32; 3 * n];
    for i in 0..n {
        for c in 0..3 {
            v[c * n + i] = (img.data[i * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Ok(Tensor::from_vec(v, (3, img.height, img.width), &Device::Cpu)?)
}

/// Load, resize, crop and normalise an image for a CLIP vision tower of input size `size`.
pub fn preprocess(path: &Path, size: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor> {
    to_tensor(&resize_and_crop(&load_rgb(path)?, size), mean, std)
}
