//! Helpers shared by the model tests.
#![allow(dead_code, unused_imports)]

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn expected(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("expected.safetensors"), &Device::Cpu).unwrap()
}

pub fn ids(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}

pub fn usizes(t: &Tensor) -> Vec<usize> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

/// Max |a - b| over the first `lengths[i]` positions of each row of `[b, s, ...]` tensors.
pub fn max_abs_diff_rows(a: &Tensor, b: &Tensor, lengths: &[usize]) -> f32 {
    let mut m = 0f32;
    for (i, &l) in lengths.iter().enumerate() {
        let x = a.get(i).unwrap().narrow(0, 0, l).unwrap().to_dtype(DType::F32).unwrap();
        let y = b.get(i).unwrap().narrow(0, 0, l).unwrap().to_dtype(DType::F32).unwrap();
        m = m.max(max_abs_diff(&x, &y));
    }
    m
}

pub use pez_nn::testing::{check_grad, max_abs_diff, random};

/// One text of a `next_token.json` fixture: its token ids and, at every position, transformers' top-20 next
/// tokens with their log-probs.
#[derive(serde::Deserialize)]
pub struct NextToken {
    pub text: String,
    pub ids: Vec<u32>,
    pub top_ids: Vec<Vec<u32>>,
    pub top_logprobs: Vec<Vec<f32>>,
}
