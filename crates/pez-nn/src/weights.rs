//! Named frozen tensors of one checkpoint, read through prefix views in the spirit of candle's `VarBuilder`:
//! `w.pp("model.layers").pp(3).get("input_layernorm.weight")` reads `model.layers.3.input_layernorm.weight`.

use crate::matmul::Precision;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

struct Store {
    tensors: HashMap<String, Tensor>,
    /// Where the tensors came from, for errors.
    source: String,
    /// The dtype the model computes in (on the CPU, bf16 means f32 tensors and bf16 products; `storage_dtype`).
    dtype: DType,
    device: Device,
}

/// The dtype a checkpoint's tensors are kept in to compute in `dtype` on `device`: on the CPU, bf16 products read
/// f32 tensors (rounded inside the kernels; candle multiplies no bf16 on the CPU), so bf16 is stored as f32.
/// With the composed ops forced (`PEZ_OPS=composed`, the GPU's path) bf16 tensors are kept, as on a GPU.
pub fn storage_dtype(dtype: DType, device: &Device) -> DType {
    if device.is_cpu() && dtype == DType::BF16 && crate::backend::current() == crate::backend::Impl::Kernels {
        DType::F32
    } else {
        dtype
    }
}

/// A view of a checkpoint's tensors under a prefix (cheap to clone: the tensors are shared).
#[derive(Clone)]
pub struct Weights {
    store: Arc<Store>,
    prefix: String,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>, source: impl Into<String>, dtype: DType, device: Device) -> Self {
        Self {
            store: Arc::new(Store {
                tensors,
                source: source.into(),
                dtype,
                device,
            }),
            prefix: String::new(),
        }
    }

    /// The view under `name` (a dotted path or a layer index) inside this one.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            store: self.store.clone(),
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// The view under the first of `candidates` (e.g. `"transformer"`) under which `probe` exists, else this one:
    /// checkpoints saved with a task head carry such a prefix, bare models do not.
    pub fn under_first(&self, candidates: &[&str], probe: &str) -> Self {
        candidates
            .iter()
            .map(|c| self.pp(c))
            .find(|w| w.contains(probe))
            .unwrap_or_else(|| self.clone())
    }

    /// The same checkpoint's tensors under other names (e.g. llama.cpp's renamed to Hugging Face's).
    pub fn renamed(&self, tensors: HashMap<String, Tensor>) -> Self {
        Self::new(
            tensors,
            self.store.source.clone(),
            self.store.dtype,
            self.store.device.clone(),
        )
    }

    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.tensors.contains_key(&self.full(name))
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let full = self.full(name);
        self.store
            .tensors
            .get(&full)
            .cloned()
            .with_context(|| format!("tensor `{full}` not found in {}", self.store.source))
    }

    /// Like `get`, with the shape checked.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            bail!(
                "tensor `{}` in {} has shape {:?}, expected {shape:?}",
                self.full(name),
                self.store.source,
                t.dims()
            );
        }
        Ok(t)
    }

    pub fn get_opt(&self, name: &str) -> Option<Tensor> {
        self.store.tensors.get(&self.full(name)).cloned()
    }

    /// Every tensor name in the checkpoint (whole names, whatever the view).
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.store.tensors.keys()
    }

    pub fn source(&self) -> &str {
        &self.store.source
    }
    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.store.dtype
    }
    /// How the CPU kernels treat products with these weights: bf16 when the model computes in bf16 on the CPU.
    pub fn precision(&self) -> Precision {
        if self.store.device.is_cpu() && self.store.dtype == DType::BF16 {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
    pub fn device(&self) -> &Device {
        &self.store.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_views_read_dotted_names() {
        let t = |v: f32| Tensor::new(&[v], &Device::Cpu).unwrap();
        let w = Weights::new(
            [
                ("model.layers.3.norm.weight".to_string(), t(1.0)),
                ("transformer.wte.weight".to_string(), t(2.0)),
            ]
            .into(),
            "test",
            DType::F32,
            Device::Cpu,
        );
        let layer = w.pp("model.layers").pp(3);
        assert_eq!(layer.get("norm.weight").unwrap().to_vec1::<f32>().unwrap(), [1.0]);
        assert!(layer.get_opt("norm.bias").is_none());
        let e = layer.get("norm.bias").unwrap_err().to_string();
        assert!(e.contains("model.layers.3.norm.bias") && e.contains("test"), "{e}");
        assert!(w
            .under_first(&["transformer", "model"], "wte.weight")
            .contains("wte.weight"));
        assert!(w.under_first(&["h"], "wte.weight").contains("transformer.wte.weight"));
    }
}
