//! The classifier's input layout and truncation on the real SmolLM2 tokenizer and weights.

use candle_core::{DType, Device};
use pez_models::{load_lm, tokenizer};
use pez_tasks::TaskSpec;
use pez_classify::Classifier;

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
    assert_eq!(ids.len() + 10, lm.model.info().max_positions, "prompt + text + template fill the context exactly");
    assert_eq!(&ids[ids.len() - template.len()..], template.as_slice(), "the template survives truncation");
    let head = tokenizer::encode(&lm.tokenizer, "great great great").unwrap();
    assert_eq!(&ids[..head.len()], head.as_slice(), "the start of the text is kept");
    // Short texts are untouched.
    let short = clf.encode("a fine film").unwrap();
    assert_eq!(short, [tokenizer::encode(&lm.tokenizer, "a fine film").unwrap(), template].concat());
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
