//! Text encoders as PEZ sees them: a prompt's embedding rows in, one feature vector out, with the encoder's own
//! framing tokens added around the prompt.

use anyhow::Result;
use candle_core::Tensor;
use pez_models::bert::Bert;
use pez_models::clip::ClipText;

pub trait TextEncoder {
    /// The matrix prompts are made of `[vocab, d]`.
    fn token_embeddings(&self) -> &Tensor;
    /// Features `[1, f]` (f32 or f64) of a prompt given as embedding rows `[P, d]`.
    fn features(&self, prompt: &Tensor) -> Result<Tensor>;
}

/// `[first ; prompt ; last]` as one batch row `[1, P + 2, d]`: the encoder's framing tokens around the prompt.
fn framed(e: &Tensor, first: u32, prompt: &Tensor, last: u32) -> Result<Tensor> {
    let row = |i: u32| e.index_select(&Tensor::new(&[i], e.device())?, 0);
    Ok(Tensor::cat(&[&row(first)?, prompt, &row(last)?], 0)?.unsqueeze(0)?)
}

/// BERT sentence encoder: `[CLS] prompt [SEP]`, mean-pooled (sentence-transformers).
pub struct BertEncoder {
    pub bert: Bert,
    pub cls: u32,
    pub sep: u32,
}

impl TextEncoder for BertEncoder {
    fn token_embeddings(&self) -> &Tensor {
        self.bert.token_embeddings()
    }
    fn features(&self, prompt: &Tensor) -> Result<Tensor> {
        let x = framed(self.bert.token_embeddings(), self.cls, prompt, self.sep)?;
        self.bert.encode(&x, &[x.dim(1)?])
    }
}

/// CLIP text tower: `<start_of_text> prompt <end_of_text>`, features at the end-of-text token.
pub struct ClipEncoder {
    pub text: ClipText,
    pub sot: u32,
    pub eot: u32,
}

impl TextEncoder for ClipEncoder {
    fn token_embeddings(&self) -> &Tensor {
        self.text.token_embeddings()
    }
    fn features(&self, prompt: &Tensor) -> Result<Tensor> {
        let x = framed(self.text.token_embeddings(), self.sot, prompt, self.eot)?;
        self.text.features(&x, &[x.dim(1)? - 1])
    }
}

/// Loads a text encoder by name or directory onto `device`, computing in `dtype`: a BERT sentence encoder
/// (`minilm-l6`) or a CLIP model's text tower.
pub fn load(
    name: &str,
    dtype: pez_nn::Dtype,
    device: &candle_core::Device,
) -> Result<(Box<dyn TextEncoder>, tokenizers::Tokenizer)> {
    use anyhow::{bail, Context};
    let dt = dtype.resolve_on(device).candle();
    let dir = match pez_hub::ModelSpec::resolve(name)? {
        pez_hub::ModelSpec::HfDir(d) => d,
        pez_hub::ModelSpec::Gguf(p) => bail!("{}: a text encoder is a Hugging Face directory, not GGUF", p.display()),
    };
    let tok = pez_hub::tokenizer::from_dir(&dir)?;
    let id = |t: &str| {
        tok.token_to_id(t)
            .with_context(|| format!("{}: tokenizer has no {t}", dir.display()))
    };
    #[derive(serde::Deserialize)]
    struct Mt {
        model_type: String,
    }
    let mt: Mt = if pez_models::clip::is_open_clip_dir(&dir) {
        Mt {
            model_type: "clip".into(),
        }
    } else {
        pez_hub::checkpoint::read_config(&dir)?
    };
    let enc: Box<dyn TextEncoder> = match mt.model_type.as_str() {
        "bert" => Box::new(BertEncoder {
            bert: Bert::from_dir(&dir, dt, device)?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
        }),
        "clip" => Box::new(ClipEncoder {
            text: pez_models::clip::Clip::from_dir(&dir, dt, device)?.text,
            sot: id("<|startoftext|>")?,
            eot: id("<|endoftext|>")?,
        }),
        other => bail!(
            "{}: model_type `{other}` is not a text encoder (bert, clip)",
            dir.display()
        ),
    };
    Ok((enc, tok))
}

/// A CLIP model for image inversion: the text tower as a `TextEncoder`, the vision tower, and the image
/// normalisation (from `preprocessor_config.json` or `open_clip_config.json` when present, else OpenAI's).
pub struct ClipModel {
    pub text: ClipEncoder,
    pub vision: pez_models::clip::ClipVision,
    pub tokenizer: tokenizers::Tokenizer,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ClipModel {
    /// `name` on `device`, computing in `dtype`.
    pub fn load(name: &str, dtype: pez_nn::Dtype, device: &candle_core::Device) -> Result<Self> {
        use anyhow::{bail, Context};
        let dir = match pez_hub::ModelSpec::resolve(name)? {
            pez_hub::ModelSpec::HfDir(d) => d,
            pez_hub::ModelSpec::Gguf(p) => bail!("{}: CLIP models are Hugging Face directories", p.display()),
        };
        let tokenizer = pez_hub::tokenizer::from_dir(&dir)?;
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .with_context(|| format!("{}: tokenizer has no {t}", dir.display()))
        };
        let (sot, eot) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        let clip = pez_models::clip::Clip::from_dir(&dir, dtype.resolve_on(device).candle(), device)?;
        let (mean, std) =
            pez_models::clip::image_mean_std(&dir)?.unwrap_or((crate::image::OPENAI_MEAN, crate::image::OPENAI_STD));
        Ok(Self {
            text: ClipEncoder {
                text: clip.text,
                sot,
                eot,
            },
            vision: clip.vision,
            tokenizer,
            mean,
            std,
        })
    }

    /// Projected image features `[n, f]` of image files.
    pub fn image_features(&self, paths: &[std::path::PathBuf]) -> Result<Tensor> {
        let size = self.vision.image_size();
        let px = paths
            .iter()
            .map(|p| crate::image::preprocess(p, size, self.mean, self.std))
            .collect::<Result<Vec<_>>>()?;
        let device = self.text.text.token_embeddings().device();
        self.vision.features(&Tensor::stack(&px, 0)?.to_device(device)?)
    }
}
