//! CLIP image preprocessing against PIL (scripts/make_image_fixture.py) on the shared images.

use pez_invert::image::{load_rgb, resize_and_crop, to_tensor, OPENAI_MEAN, OPENAI_STD};
use std::path::Path;

#[test]
fn preprocessing_matches_pil_and_torchvision_rules() {
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/preprocess.json")).unwrap(),
    )
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/clip_images");
    let mut checked = 0;
    for (name, want) in fx.as_object().unwrap() {
        let img = load_rgb(&dir.join(name)).unwrap();
        assert_eq!(
            [img.width as u64, img.height as u64],
            [want["size"][0].as_u64().unwrap(), want["size"][1].as_u64().unwrap()],
            "{name}"
        );
        let crop = resize_and_crop(&img, 224);
        let mut off = 0;
        for s in want["samples"].as_array().unwrap() {
            let (y, x, c, v) = (
                s[0].as_u64().unwrap() as usize,
                s[1].as_u64().unwrap() as usize,
                s[2].as_u64().unwrap() as usize,
                s[3].as_i64().unwrap(),
            );
            let ours = crop.data[(y * 224 + x) * 3 + c] as i64;
            // JPEG decoders may differ by a level; PNG must be exact.
            let tol = if name.ends_with(".jpg") { 2 } else { 0 };
            if (ours - v).abs() > tol {
                off += 1;
            }
        }
        assert_eq!(off, 0, "{name}: {off} of 400 sampled pixels differ from PIL");
        let t = to_tensor(&crop, OPENAI_MEAN, OPENAI_STD).unwrap();
        let means: Vec<f32> = (0..3)
            .map(|c| t.get(c).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap())
            .collect();
        for (m, w) in means.iter().zip(want["channel_means"].as_array().unwrap()) {
            assert!(
                (*m as f64 - w.as_f64().unwrap()).abs() < 2e-3,
                "{name}: channel mean {m} vs {w}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
}
