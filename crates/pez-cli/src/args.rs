//! What several commands' flags share: where a model runs (`Placement`, the one `--dtype` and `--device`), and how
//! a flag's text becomes a library type (`FlagValue`: the libraries know no clap, only `FromStr`).

use pez_core::{Method, OptimizerKind};
use pez_hub::tokenizer::TokenSet;
use pez_nn::{DeviceArg, Dtype};
use pez_tasks::{Calibration, RowRule};
use std::path::PathBuf;
use strum::VariantNames;

/// `--dtype` and `--device`, flattened into every command that runs a model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Placement {
    /// f32, bf16 (bf16 products with f32 accumulation; norms, softmax, losses, the projection and the optimizer
    /// stay f32), or auto: bf16 where the CPU has bf16 units (AVX512-BF16), else f32; f32 on a GPU. [default:
    /// auto]
    #[arg(long, value_parser = parse::<Dtype>)]
    pub dtype: Option<Dtype>,
    /// cpu, cuda or cuda:N (a binary built with the `cuda` feature).
    #[arg(long, default_value = "cpu", value_parser = parse::<DeviceArg>)]
    pub device: DeviceArg,
}

impl Placement {
    /// The device opened (or why not), and the dtype made definite for it.
    pub fn open(&self) -> anyhow::Result<(candle_core::Device, Dtype)> {
        let device = self.device.open()?;
        let dtype = self.dtype().resolve_on(&device);
        Ok((device, dtype))
    }

    /// The dtype asked for (`auto` when none is).
    pub fn dtype(&self) -> Dtype {
        self.dtype.unwrap_or(Dtype::Auto)
    }
}

/// A flag's value from its text; a name that is not one of an enum's is refused listing the names.
pub trait FlagValue: Sized {
    fn parse_flag(s: &str) -> Result<Self, String>;
}

/// clap's value parser for any `FlagValue`.
pub fn parse<T: FlagValue>(s: &str) -> Result<T, String> {
    T::parse_flag(s)
}

macro_rules! from_str {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn parse_flag(s: &str) -> Result<Self, String> {
                s.parse().map_err(|e| format!("{e}"))
            }
        }
    )*};
}
from_str!(String, PathBuf, f64, usize, u64, DeviceArg);

macro_rules! one_of {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn parse_flag(s: &str) -> Result<Self, String> {
                s.parse().map_err(|_| format!("expected one of: {}", <$t>::VARIANTS.join(", ")))
            }
        }
    )*};
}
one_of!(
    Method,
    OptimizerKind,
    TokenSet,
    RowRule,
    Calibration,
    Dtype,
    pez_config::Init,
    pez_classify::endpoint::Api
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_the_files_write_them_and_others_list_the_choices() {
        assert_eq!(parse::<Method>("autoprompt-sgd"), Ok(Method::AutopromptSgd));
        assert_eq!(parse::<Calibration>("content-free"), Ok(Calibration::ContentFree));
        assert_eq!(parse::<DeviceArg>("cuda:1"), Ok(DeviceArg::Cuda(1)));
        assert_eq!(parse::<Dtype>("f16").unwrap_err(), "expected one of: f32, bf16, auto");
        assert!(parse::<usize>("-3").is_err());
    }
}
