//! Tests of the static model: exactness against the Python reference (token ids from
//! Hugging Face `tokenizers`, vectors from `model2vec`, recorded by
//! scripts/embed_reference.py in testdata/reference.json), tokenizer edge cases, and
//! typed errors for broken model directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

use super::*;

/// Cosine a vector must reach against the reference (f32 sums vs numpy's, and the
/// reference's own rounding to 6 decimals).
const MIN_REFERENCE_COSINE: f32 = 0.9999;

const REFERENCE: &str = include_str!("testdata/reference.json");

fn builtin() -> StaticModel {
    StaticModel::builtin().expect("the shipped model loads")
}

fn embed(model: &dyn Embedder, text: &str) -> (Vec<f32>, usize) {
    let mut out = vec![0.0; model.dim()];
    let n = model
        .embed(text, &mut EmbedScratch::new(), &mut out)
        .expect("right dimension");
    (out, n)
}

fn ids(model: &StaticModel, text: &str) -> Vec<u32> {
    let mut scratch = EmbedScratch::new();
    model.tokenize_untruncated(text, &mut scratch);
    scratch.token_ids().to_vec()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Checks `model` against a reference file; returns the texts and vectors checked,
/// and the lowest cosine met.
fn check_reference(model: &StaticModel, reference: &Value) -> (usize, usize, f32) {
    let texts = reference["texts"].as_array().expect("texts");
    let (mut n_vectors, mut min_cosine) = (0, 1.0f32);
    for entry in texts {
        let text = entry["text"].as_str().expect("text");
        let expected: Vec<u32> = serde_json::from_value(entry["ids"].clone()).expect("ids");
        assert_eq!(ids(model, text), expected, "token ids of {text:?}");
        let Some(vector) = entry.get("vector") else { continue };
        let expected: Vec<f32> = serde_json::from_value(vector.clone()).expect("vector");
        let (got, n_tokens) = embed(model, text);
        if expected.iter().all(|&x| x == 0.0) {
            assert_eq!(n_tokens, 0, "{text:?} has no embeddable token in the reference");
            assert!(got.iter().all(|&x| x == 0.0), "{text:?}");
        } else {
            let cos = cosine(&got, &expected);
            assert!(cos >= MIN_REFERENCE_COSINE, "cosine {cos} for {text:?}");
            min_cosine = min_cosine.min(cos);
        }
        n_vectors += 1;
    }
    (texts.len(), n_vectors, min_cosine)
}

#[test]
fn builtin_model_matches_the_python_reference() {
    let reference: Value = serde_json::from_str(REFERENCE).expect("fixture is JSON");
    let (n_texts, n_vectors, _) = check_reference(&builtin(), &reference);
    assert!(n_texts >= 40 && n_vectors >= 30, "{n_texts} texts, {n_vectors} vectors");
}

/// The wider check of scripts/embed_reference.py (LoCoMo turns, any model directory).
#[test]
#[ignore = "needs NEXUS_EMBED_REFERENCE and NEXUS_EMBED_MODEL (see scripts/embed_reference.py)"]
fn wide_reference_check() {
    let (Some(reference), Some(model)) = (
        std::env::var_os("NEXUS_EMBED_REFERENCE"),
        std::env::var_os("NEXUS_EMBED_MODEL"),
    ) else {
        eprintln!("skipped: set NEXUS_EMBED_REFERENCE and NEXUS_EMBED_MODEL");
        return;
    };
    let reference: Value = serde_json::from_slice(&std::fs::read(reference).expect("reference file")).expect("JSON");
    let model = StaticModel::from_dir(Path::new(&model)).expect("model loads");
    let (n_texts, n_vectors, min_cosine) = check_reference(&model, &reference);
    eprintln!("{n_texts} texts: ids identical; {n_vectors} vectors: lowest cosine {min_cosine:.7}");
}

#[test]
fn builtin_model_reports_dimension_and_identity() {
    let model = builtin();
    assert_eq!(model.dim(), 256);
    assert_eq!(model.identity().name, "minilm-static-256");
    assert_eq!(model.identity().dim, 256);
    assert_eq!(
        model.identity(),
        builtin().identity(),
        "identity is a pure function of the files"
    );
    let (v, n) = embed(&model, "Caroline went to the support group.");
    assert_eq!(n, 7);
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4, "unit length");
}

#[test]
fn wrong_output_length_is_a_typed_error() {
    let err = builtin()
        .embed("hello", &mut EmbedScratch::new(), &mut [0.0; 255])
        .unwrap_err();
    assert_eq!(
        err,
        EmbedError::DimensionMismatch {
            expected: 256,
            got: 255
        }
    );
}

#[test]
fn tokenizer_edge_cases() {
    let model = builtin();
    let unk = ids(&model, "[UNK]");
    assert_eq!(unk.len(), 1, "the literal special token is one token");
    assert!(ids(&model, "").is_empty());
    assert!(ids(&model, " \t\r\n\u{3000}\u{a0} ").is_empty(), "whitespace only");
    assert_eq!(ids(&model, &"x".repeat(101)), unk, "over max_input_chars_per_word");
    assert_ne!(
        ids(&model, &"x".repeat(100)),
        unk,
        "at the limit WordPiece still splits it"
    );
    assert_eq!(
        ids(&model, "Héllo Wörld"),
        ids(&model, "hello world"),
        "accents stripped, lowercased"
    );
    assert_eq!(ids(&model, "e\u{301}"), ids(&model, "e"), "combining marks dropped");
    assert_eq!(
        ids(&model, "a\u{0}b\u{7}c\u{200b}d"),
        ids(&model, "abcd"),
        "controls removed"
    );
    assert_eq!(ids(&model, "野口").len(), 2, "each CJK ideograph is its own word");
    assert_eq!(ids(&model, "野口"), [ids(&model, "野"), ids(&model, "口")].concat());
    // An emoji is a symbol, not punctuation: glued to a word, the word cannot be covered
    // by WordPiece and becomes one unknown token, exactly as in the reference.
    assert_eq!(ids(&model, "hi😀"), unk, "emoji glued to a word");
    assert_eq!(ids(&model, "hi 😀"), [ids(&model, "hi"), ids(&model, "😀")].concat());
    assert_eq!(
        ids(&model, "a,b"),
        [ids(&model, "a"), ids(&model, ","), ids(&model, "b")].concat()
    );
}

#[test]
fn unknown_only_text_embeds_to_nothing() {
    let model = builtin();
    for text in ["", "   ", &"x".repeat(101), "[UNK]", "\u{0}\u{fffd}"] {
        let (v, n) = embed(&model, text);
        assert_eq!(n, 0, "{text:?}");
        assert!(v.iter().all(|&x| x == 0.0), "{text:?}");
    }
}

#[test]
fn long_text_is_truncated_to_max_length_tokens() {
    let model = builtin();
    let long = "word ".repeat(2000);
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; model.dim()];
    assert_eq!(
        model.embed(&long, &mut scratch, &mut out).expect("dim"),
        static_model::DEFAULT_MAX_TOKENS
    );
    assert_eq!(scratch.token_ids().len(), static_model::DEFAULT_MAX_TOKENS);
}

#[test]
fn one_scratch_serves_many_texts_and_gives_the_same_vectors() {
    let model = builtin();
    let mut scratch = EmbedScratch::new();
    let mut out = vec![0.0; model.dim()];
    for text in ["first text, quite long ".repeat(20).as_str(), "second", "", "İ third"] {
        model.embed(text, &mut scratch, &mut out).expect("dim");
        assert_eq!(out, embed(&model, text).0, "{text:?}");
    }
}

// ---- loading: any model2vec directory, and typed errors for broken ones ----

/// A throwaway model directory, removed on drop.
struct TempModel(PathBuf);

impl TempModel {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nexus-embed-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> &Self {
        std::fs::write(self.0.join(file), bytes).expect("write");
        self
    }

    fn load(&self) -> Result<StaticModel, ModelError> {
        StaticModel::from_dir(&self.0)
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A four-token WordPiece tokenizer: [UNK]=0, hello=1, world=2, ##s=3.
fn tiny_tokenizer() -> Value {
    json!({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "##s": 3}}
    })
}

fn tiny_config() -> Value {
    json!({"model_type": "model2vec", "normalize": true, "pooling": "mean", "hidden_dim": 2})
}

fn safetensors_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (*name, TensorView::new(*dtype, shape.clone(), data).expect("view")))
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Rows: [UNK]=(9,9), hello=(1,0), world=(0,1), ##s=(1,1).
fn tiny_rows() -> Vec<f32> {
    vec![9.0, 9.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
}

fn tiny_model(embeddings: (Dtype, Vec<usize>, Vec<u8>)) -> TempModel {
    let dir = TempModel::new();
    let (dtype, shape, data) = embeddings;
    dir.write("config.json", tiny_config().to_string().as_bytes())
        .write("tokenizer.json", tiny_tokenizer().to_string().as_bytes())
        .write(
            "model.safetensors",
            &safetensors_file(&[("embeddings", dtype, shape, data)]),
        );
    dir
}

#[test]
fn a_small_f32_directory_loads_and_embeds_by_the_rules() {
    let model = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows())))
        .load()
        .expect("loads");
    assert_eq!(model.dim(), 2);
    // hello, [UNK] (","), world, [UNK] ("qqq"): unknown tokens are left out of the mean.
    let (v, n) = embed(&model, "Hello, WORLD qqq");
    assert_eq!(n, 2);
    let half = std::f32::consts::FRAC_1_SQRT_2;
    assert!((v[0] - half).abs() < 1e-6 && (v[1] - half).abs() < 1e-6, "{v:?}");
    // world + ##s = mean((0, 1), (1, 1)) = (0.5, 1) → normalised.
    let (v, n) = embed(&model, "worlds");
    assert_eq!(n, 2);
    assert!((v[1] / v[0] - 2.0).abs() < 1e-5, "{v:?}");
}

#[test]
fn f16_and_int8_with_weights_load_like_f32() {
    let f32_model = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows())))
        .load()
        .expect("f32");
    let f16: Vec<u8> = [0x4880u16, 0x4880, 0x3c00, 0, 0, 0x3c00, 0x3c00, 0x3c00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16_model = tiny_model((Dtype::F16, vec![4, 2], f16)).load().expect("f16");
    let dir = tiny_model((
        Dtype::I8,
        vec![4, 2],
        [127i8, 127, 127, 0, 0, 127, 127, 127].map(|b| b as u8).to_vec(),
    ));
    let scales = f32_bytes(&[9.0 / 127.0, 1.0 / 127.0, 1.0 / 127.0, 1.0 / 127.0]);
    let codes = [127i8, 127, 127, 0, 0, 127, 127, 127].map(|b| b as u8).to_vec();
    dir.write(
        "model.safetensors",
        &safetensors_file(&[
            ("embeddings", Dtype::I8, vec![4, 2], codes),
            ("weights", Dtype::F32, vec![4], scales),
        ]),
    );
    let i8_model = dir.load().expect("int8");
    for text in ["hello worlds", "world", "hellos hello"] {
        let expected = embed(&f32_model, text).0;
        assert!(cosine(&embed(&f16_model, text).0, &expected) > 0.99999, "{text}");
        assert!(cosine(&embed(&i8_model, text).0, &expected) > 0.99999, "{text}");
    }
    assert_ne!(f32_model.identity().checksum, i8_model.identity().checksum);
}

#[test]
fn missing_or_corrupt_directories_are_typed_errors() {
    let empty = TempModel::new();
    assert!(matches!(empty.load(), Err(ModelError::NoLayout { .. })));
    let missing = StaticModel::from_dir(Path::new("/nonexistent/nexus-model"));
    assert!(matches!(missing, Err(ModelError::NoLayout { .. })));

    let dir = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows())));
    dir.write("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage");
    assert!(
        matches!(dir.load(), Err(ModelError::SafeTensors { .. })),
        "{:?}",
        dir.load().err()
    );
    dir.write("model.safetensors", b"");
    assert!(matches!(dir.load(), Err(ModelError::SafeTensors { .. })));

    let dir = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows())));
    dir.write("tokenizer.json", b"{not json");
    assert!(matches!(
        dir.load(),
        Err(ModelError::Json {
            file: "tokenizer.json",
            ..
        })
    ));
    dir.write("tokenizer.json", tiny_tokenizer().to_string().as_bytes())
        .write("config.json", b"[1");
    assert!(matches!(
        dir.load(),
        Err(ModelError::Json {
            file: "config.json",
            ..
        })
    ));
}

#[test]
fn wrong_tensor_shapes_and_values_are_typed_errors() {
    let rows = |n: usize| f32_bytes(&vec![0.5; n]);
    let err = tiny_model((Dtype::F32, vec![5, 2], rows(10))).load().err();
    assert!(
        matches!(err, Some(ModelError::VocabMismatch { tokens: 4, rows: 5 })),
        "{err:?}"
    );
    let err = tiny_model((Dtype::F32, vec![8], rows(8))).load().err();
    assert!(
        matches!(
            err,
            Some(ModelError::BadShape {
                tensor: "embeddings",
                ..
            })
        ),
        "{err:?}"
    );
    let err = tiny_model((Dtype::F32, vec![4, 0], vec![])).load().err();
    assert!(matches!(err, Some(ModelError::BadShape { .. })), "{err:?}");
    let mut nan = tiny_rows();
    nan[3] = f32::NAN;
    let err = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&nan))).load().err();
    assert!(
        matches!(err, Some(ModelError::NonFinite { tensor: "embeddings" })),
        "{err:?}"
    );
    let err = tiny_model((Dtype::I32, vec![4, 2], rows(8))).load().err();
    assert!(
        matches!(
            err,
            Some(ModelError::UnsupportedDtype {
                tensor: "embeddings",
                ..
            })
        ),
        "{err:?}"
    );

    let dir = tiny_model((Dtype::F32, vec![4, 2], rows(8)));
    dir.write(
        "model.safetensors",
        &safetensors_file(&[("other", Dtype::F32, vec![4, 2], rows(8))]),
    );
    assert!(matches!(
        dir.load(),
        Err(ModelError::MissingTensor { name: "embeddings" })
    ));
    let weights = ("weights", Dtype::F32, vec![3], f32_bytes(&[1.0; 3]));
    dir.write(
        "model.safetensors",
        &safetensors_file(&[("embeddings", Dtype::F32, vec![4, 2], rows(8)), weights]),
    );
    assert!(matches!(
        dir.load(),
        Err(ModelError::BadShape { tensor: "weights", .. })
    ));
}

#[test]
fn unsupported_tokenizers_and_pooling_are_typed_errors() {
    let dir = tiny_model((Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows())));
    let mut tokenizer = tiny_tokenizer();
    tokenizer["model"]["type"] = json!("BPE");
    dir.write("tokenizer.json", tokenizer.to_string().as_bytes());
    let err = dir.load().err();
    assert!(
        matches!(&err, Some(ModelError::Unsupported { kind, .. }) if kind == "BPE"),
        "{err:?}"
    );

    let mut tokenizer = tiny_tokenizer();
    tokenizer["normalizer"] = json!({"type": "Replace", "pattern": "a", "content": "b"});
    dir.write("tokenizer.json", tokenizer.to_string().as_bytes());
    assert!(matches!(
        dir.load(),
        Err(ModelError::Unsupported {
            component: "normalizer",
            ..
        })
    ));

    let mut tokenizer = tiny_tokenizer();
    tokenizer["model"]["unk_token"] = json!("<unk>");
    dir.write("tokenizer.json", tokenizer.to_string().as_bytes());
    assert!(matches!(dir.load(), Err(ModelError::MissingUnkToken { .. })));

    let mut tokenizer = tiny_tokenizer();
    tokenizer["model"]["vocab"]["huge"] = json!(99);
    dir.write("tokenizer.json", tokenizer.to_string().as_bytes());
    let err = dir.load().err();
    assert!(
        matches!(
            err,
            Some(ModelError::VocabMismatch { .. } | ModelError::IdOutOfRange { .. })
        ),
        "{err:?}"
    );

    let mut config = tiny_config();
    config["pooling"] = json!("cls");
    dir.write("tokenizer.json", tiny_tokenizer().to_string().as_bytes())
        .write("config.json", config.to_string().as_bytes());
    assert!(matches!(
        dir.load(),
        Err(ModelError::Unsupported {
            component: "pooling",
            ..
        })
    ));
}

#[test]
fn sentence_transformers_layout_loads_too() {
    let dir = TempModel::new();
    std::fs::create_dir_all(dir.0.join("0_StaticEmbedding")).expect("mkdir");
    dir.write("config_sentence_transformers.json", b"{}")
        .write(
            "0_StaticEmbedding/tokenizer.json",
            tiny_tokenizer().to_string().as_bytes(),
        )
        .write(
            "0_StaticEmbedding/model.safetensors",
            &safetensors_file(&[("embedding.weight", Dtype::F32, vec![4, 2], f32_bytes(&tiny_rows()))]),
        );
    let model = dir.load().expect("loads");
    // No `normalize` in that config: the mean is returned as is, like model2vec does.
    assert_eq!(embed(&model, "hello world").0, vec![0.5, 0.5]);
}
