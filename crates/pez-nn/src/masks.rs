//! Attention masks (additive constants) and the positions of the tokens they are built for: causal after a
//! cached prefix, per row for rows packed into one sequence, with an optional sliding window, and key padding.

use candle_core::{DType, Device, Result, Tensor};

/// A large negative number that stands for -inf in additive masks (finite, so fully masked rows stay finite).
pub const MASKED: f64 = -1e9;

/// Rows packed into one sequence: token `t` belongs to row `row[t]` at position `pos[t]` of that row (counted
/// after any cached prefix). A token attends to the cache and to the earlier tokens of its own row only.
#[derive(Debug, Clone)]
pub struct Packed {
    pub row: Vec<usize>,
    pub pos: Vec<usize>,
}

impl Packed {
    pub fn new(lengths: &[usize]) -> Self {
        let row = lengths
            .iter()
            .enumerate()
            .flat_map(|(r, &l)| std::iter::repeat_n(r, l))
            .collect();
        let pos = lengths.iter().flat_map(|&l| 0..l).collect();
        Self { row, pos }
    }
    /// Index in the packed sequence of each row's last token.
    pub fn last_tokens(&self) -> Vec<usize> {
        (0..self.row.len())
            .filter(|&t| t + 1 == self.row.len() || self.row[t + 1] != self.row[t])
            .collect()
    }
    /// Absolute positions (after `past` cached ones).
    pub fn positions(&self, past: usize) -> Vec<usize> {
        self.pos.iter().map(|&p| past + p).collect()
    }
}

/// Absolute positions of `s` new tokens after `past` cached ones: consecutive, or per row when `packed`.
pub fn token_positions(s: usize, past: usize, packed: Option<&Packed>) -> Vec<usize> {
    match packed {
        None => (past..past + s).collect(),
        Some(k) => k.positions(past),
    }
}

/// The additive attention mask `[s, past + s]` of `s` new tokens: causal, or per row when `packed`.
pub fn attention_mask(
    s: usize,
    past: usize,
    packed: Option<&Packed>,
    window: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    match packed {
        None => causal_mask_after(s, past, window, dtype, dev),
        Some(k) => packed_mask(k, past, window, dtype, dev),
    }
}

/// Additive causal mask `[s, s]`: 0 where key <= query (and within `window` if given), MASKED elsewhere.
pub fn causal_mask(s: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    causal_mask_after(s, 0, window, dtype, dev)
}

/// Causal mask `[s, past + s]` for `s` queries at positions `past..past + s` over keys at `0..past + s`.
pub fn causal_mask_after(s: usize, past: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    let keys = past + s;
    let mut m = vec![0f32; s * keys];
    for i in 0..s {
        let q = past + i;
        for k in 0..keys {
            let future = k > q;
            let too_far = window.is_some_and(|w| q >= w && k <= q - w);
            if future || too_far {
                m[i * keys + k] = MASKED as f32;
            }
        }
    }
    Tensor::from_vec(m, (s, keys), dev)?.to_dtype(dtype)
}

/// Mask `[T, past + T]` for rows packed into one sequence: every token sees the `past` cached positions and the
/// earlier tokens of its own row (within `window` of its absolute position, if given).
pub fn packed_mask(packed: &Packed, past: usize, window: Option<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    let t = packed.row.len();
    let keys = past + t;
    let mut m = vec![MASKED as f32; t * keys];
    for i in 0..t {
        let q = past + packed.pos[i];
        let visible = |k: usize| window.is_none_or(|w| q < w || k > q - w);
        for k in 0..past {
            if visible(k) {
                m[i * keys + k] = 0.0;
            }
        }
        for j in 0..t {
            let k = past + packed.pos[j];
            if packed.row[j] == packed.row[i] && k <= q && visible(k) {
                m[i * keys + past + j] = 0.0;
            }
        }
    }
    Tensor::from_vec(m, (t, keys), dev)?.to_dtype(dtype)
}

/// Additive key-padding mask `[b, 1, 1, s]` from per-row lengths (right padding).
pub fn key_padding_mask(lengths: &[usize], s: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; lengths.len() * s];
    for (i, &len) in lengths.iter().enumerate() {
        for k in len..s {
            m[i * s + k] = MASKED as f32;
        }
    }
    Tensor::from_vec(m, (lengths.len(), 1, 1, s), dev)?.to_dtype(dtype)
}
