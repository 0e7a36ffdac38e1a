//! `pez check-kernels`: the fused ops against the composed maths on a device (`pez_nn::check`), for a GPU machine
//! that has the binary but no Rust toolchain (scripts/gpu_check.sh) and for CI on the CPU kernels.

use crate::args::Placement;
use anyhow::{bail, Result};
use pez_nn::Dtype;
use pez_report::Table;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    placement: Placement,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.placement.device.open()?;
    // Every dtype the device's fused ops take unless one is asked for: f32 on the CPU, f32 and bf16 on CUDA.
    let dtypes = match (a.placement.dtype, device.is_cuda()) {
        (Some(Dtype::Auto) | None, true) => vec![Dtype::F32, Dtype::Bf16],
        (Some(Dtype::Auto) | None, false) => vec![Dtype::F32],
        (Some(Dtype::Bf16), false) => bail!("the CPU kernels take f32 (bf16 runs as the composed maths there)"),
        (Some(d), _) => vec![d],
    };
    let mut rows = vec![];
    for d in dtypes {
        rows.extend(pez_nn::check::fused_against_composed(&device, d.candle())?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let mut t = Table::new(&[
            "op",
            "dtype",
            "shape",
            "fused: values, gradients",
            "composed: values, gradients",
            "",
        ]);
        for r in &rows {
            t.row([
                r.op.to_string(),
                r.dtype.clone(),
                format!("{:?}", r.shape),
                format!("{:.1e}, {:.1e}", r.fused_values, r.fused_grads),
                format!("{:.1e}, {:.1e}", r.composed_values, r.composed_grads),
                if r.ok { "ok" } else { "FAILED" }.to_string(),
            ]);
        }
        print!("{}", t.finish());
    }
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} {}", r.op, r.dtype))
        .collect();
    if !bad.is_empty() {
        bail!(
            "fused ops further from the f32 truth than the composed maths: {}",
            bad.join(", ")
        );
    }
    Ok(())
}
