//! The building blocks of PEZ's models: differentiable ops whose backward computes only the input gradient
//! (the weights are frozen), the layers made of them, attention masks, and named weights with prefix views.
//!
//! Every op has two implementations with the same maths:
//! - `kernels`: fused CPU kernels, one graph node each with a hand-written backward (f32, f64);
//! - `composed`: candle primitives, whose autograd gives the backward, on any device and dtype.
//!
//! `ops` chooses between them for each call (`backend`): kernels for CPU tensors of f32/f64, the composed maths
//! otherwise or when asked (`PEZ_OPS=composed`). The kernels are tested against the composed maths.

pub mod alloc;
pub mod backend;
pub mod check;
pub mod composed;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
pub mod dtype;
pub mod kernels;
pub mod layers;
pub mod masks;
pub mod matmul;
pub mod ops;
pub mod testing;
pub mod weights;

pub use device::DeviceArg;
pub use dtype::Dtype;
pub use layers::{LayerNorm, Linear, Mlp, RmsNorm};
pub use masks::{Packed, MASKED};
pub use ops::Activation;
pub use weights::Weights;
