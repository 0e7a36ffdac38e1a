//! The classifier's input layout and truncation on the real SmolLM2 tokenizer and weights.

use candle_core::{DType, Device};
use pez_classify::Classifier;
use pez_hub::tokenizer;
use pez_models::load_lm;
use pez_tasks::TaskSpec;

#[test]
fn texts_longer_than_the_context_are_truncated_keeping_prompt_and_template() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    let task = TaskSpec::resolve("sst2").unwrap();
    let clf = Classifier::new(&lm, &task.prompt, 10).unwrap();
    assert_eq!(lm.bos, None, "SmolLM2's GGUF asks for no BOS");
    let template = tokenizer::encode(&lm.tokenizer, " It was").unwrap();
    assert_eq!(clf.template_ids, template);
    assert_eq!(clf.max_text_tokens, lm.model.info().max_positions - 10 - template.len());
    let long = "great ".repeat(lm.model.info().max_positions + 500);
    let ids = clf.encode(&long).unwrap();
    assert_eq!(
        ids.len() + 10,
        lm.model.info().max_positions,
        "prompt + text + template fill the context exactly"
    );
    assert_eq!(
        &ids[ids.len() - template.len()..],
        template.as_slice(),
        "the template survives truncation"
    );
    let head = tokenizer::encode(&lm.tokenizer, "great great great").unwrap();
    assert_eq!(&ids[..head.len()], head.as_slice(), "the start of the text is kept");
    // Short texts are untouched.
    let short = clf.encode("a fine film").unwrap();
    assert_eq!(
        short,
        [tokenizer::encode(&lm.tokenizer, "a fine film").unwrap(), template].concat()
    );
}

#[test]
fn verbalizers_are_single_tokens_for_the_built_in_tasks() {
    let lm = load_lm("smollm2-135m", DType::F32, &Device::Cpu).unwrap();
    for name in ["sst2", "agnews"] {
        let task = TaskSpec::resolve(name).unwrap();
        let clf = Classifier::new(&lm, &task.prompt, 10).unwrap();
        assert!(clf.warnings.is_empty(), "{name}: {:?}", clf.warnings);
        for (v, id) in task.prompt.verbalizers.iter().zip(&clf.verbalizer_ids) {
            assert_eq!(&tokenizer::decode(&lm.tokenizer, &[*id]).unwrap(), v);
        }
    }
}

/// `encode_within` cuts long texts before tokenizing; the ids it keeps must be those of the whole text, on both
/// real tokenizers (GPT-2-style byte-level BPE and Gemma's SentencePiece BPE), for prose, runs of whitespace,
/// one endless word, multi-byte characters and a text just past the cut.
#[test]
fn capped_encoding_equals_truncating_the_whole_text() {
    let dev: Vec<String> = TaskSpec::resolve("sst2")
        .unwrap()
        .load("dev", None)
        .unwrap()
        .examples
        .into_iter()
        .map(|e| e.text)
        .collect();
    let prose = dev.join(" ");
    let texts = [
        prose.clone(),
        prose.replace(' ', "   \n\t "),
        "a".repeat(200_000),
        "ünïcödé 日本語のテキスト 🙂 ".repeat(3_000),
        format!("{}{}", "word ".repeat(16 * 64 + 40), "x".repeat(5_000)),
        "short text".to_string(),
    ];
    for model in ["smollm2-135m", "gemma3-270m"] {
        let lm = load_lm(model, DType::F32, &Device::Cpu).unwrap();
        let clf = Classifier::new(&lm, &TaskSpec::resolve("sst2").unwrap().prompt, 10).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let full = tokenizer::encode(&lm.tokenizer, t).unwrap();
            for cap in [1, 64, 1024] {
                let (ids, truncated) = clf.encode_within(t, cap).unwrap();
                let n = full.len().min(cap);
                assert_eq!(ids.len(), n + clf.template_ids.len(), "{model} text {i} cap {cap}");
                assert_eq!(
                    &ids[..n],
                    &full[..n],
                    "{model} text {i} cap {cap}: kept ids differ from the whole text's"
                );
                assert_eq!(truncated, full.len() > cap, "{model} text {i} cap {cap}");
            }
        }
    }
}
