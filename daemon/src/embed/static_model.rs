//! A static token-embedding model in the model2vec format, and its loader.
//!
//! A text's embedding is the mean of its tokens' rows (each times its token weight,
//! when the model has one), L2-normalised when config.json says `normalize: true`.
//! Unknown tokens are left out of the mean, and the text is truncated first as
//! model2vec does (to `max_length` times the median token length in characters, then
//! to `max_length` tokens), so vectors match the Python reference.
//!
//! Files (any of model2vec's layouts): `model.safetensors` (tensor `embeddings`, or
//! `embedding.weight` in the sentence-transformers layouts, as F32, F16, BF16, F64 or
//! I8; optional `weights` [vocab] and `mapping` [vocab] for vocabulary-quantised
//! models), `tokenizer.json` (wordpiece.rs), `config.json`. The shipped default model
//! is int8 with its per-row scale stored as the `weights` tensor, which model2vec reads
//! the same way, so the shipped directory stays a plain model2vec model.
//!
//! Not here: choosing which model to load (configuration), storing vectors.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::Value;

use super::wordpiece::Tokenizer;
use super::{EmbedError, EmbedScratch, Embedder, ModelIdentity, check_dim, l2_normalize, truncate_chars};

/// model2vec's default `max_length` when config.json does not set one: at most this
/// many tokens of a text count (a static model gains nothing from more, and it bounds
/// the cost of one call).
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// Largest accepted embedding dimension: far above any static model (64–1024), low
/// enough that a corrupt shape cannot ask for absurd buffers.
pub const MAX_DIM: usize = 8192;

/// The default model, compiled into the binary (daemon/models/minilm-static-256).
const BUILTIN_NAME: &str = "minilm-static-256";
const BUILTIN_SAFETENSORS: &[u8] = include_bytes!("../../models/minilm-static-256/model.safetensors");
const BUILTIN_TOKENIZER: &[u8] = include_bytes!("../../models/minilm-static-256/tokenizer.json");
const BUILTIN_CONFIG: &[u8] = include_bytes!("../../models/minilm-static-256/config.json");

/// Why a model could not be loaded. Loading never panics on bad files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("model directory {path} has no model2vec layout (config.json, model.safetensors, tokenizer.json)")]
    NoLayout { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file} is not valid JSON: {source}")]
    Json {
        file: &'static str,
        source: serde_json::Error,
    },
    #[error("model.safetensors is not a valid safetensors file: {source}")]
    SafeTensors { source: safetensors::SafeTensorError },
    #[error("model.safetensors has no tensor named {name}")]
    MissingTensor { name: &'static str },
    #[error("tensor {tensor} has dtype {dtype}, supported: {supported}")]
    UnsupportedDtype {
        tensor: &'static str,
        dtype: String,
        supported: &'static str,
    },
    #[error("tensor {tensor} has shape {shape:?}, expected {expected}")]
    BadShape {
        tensor: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("tensor {tensor} holds a NaN or infinite value")]
    NonFinite { tensor: &'static str },
    #[error("the tokenizer has {tokens} tokens but the embedding matrix has {rows} rows (and there is no mapping)")]
    VocabMismatch { tokens: usize, rows: usize },
    #[error("token id {id} (in {what}) is outside the {len} entries it indexes")]
    IdOutOfRange { what: &'static str, id: u64, len: usize },
    #[error("{file} has no {field}")]
    MissingField { file: &'static str, field: &'static str },
    #[error("{file}: {field}: {reason}")]
    InvalidField {
        file: &'static str,
        field: &'static str,
        reason: &'static str,
    },
    #[error("unsupported {component} {kind:?} (supported: a WordPiece tokenizer, mean pooling)")]
    Unsupported { component: &'static str, kind: String },
    #[error("the tokenizer's unknown token {token:?} is not in its vocabulary")]
    MissingUnkToken { token: String },
    #[error("the added tokens cannot be matched: {reason}")]
    AddedTokens { reason: String },
}

/// The three files of a model, as bytes (from a directory or compiled in).
#[derive(Debug, Clone, Copy)]
pub struct ModelBytes<'a> {
    pub config: &'a [u8],
    pub tokenizer: &'a [u8],
    pub safetensors: &'a [u8],
}

/// A loaded static model (see the module docs).
pub struct StaticModel {
    tokenizer: Tokenizer,
    rows: Rows,
    dim: usize,
    /// Per-token multiplier, indexed by token id.
    weights: Option<Vec<f32>>,
    /// Token id → row, for vocabulary-quantised models.
    mapping: Option<Vec<u32>>,
    unk_id: u32,
    normalize: bool,
    max_tokens: usize,
    /// Characters kept before tokenizing (model2vec's cheap pre-truncation).
    max_chars: usize,
    identity: ModelIdentity,
}

/// The embedding matrix, row-major [rows × dim].
enum Rows {
    F32(Vec<f32>),
    I8(Vec<i8>),
}

/// Where a layout keeps its files, and the embedding tensor's name.
struct Layout {
    config: &'static str,
    safetensors: &'static str,
    tokenizer: &'static str,
    tensor: &'static str,
}

/// model2vec's own layout first, then the sentence-transformers ones it also reads.
const LAYOUTS: [Layout; 3] = [
    Layout {
        config: "config.json",
        safetensors: "model.safetensors",
        tokenizer: "tokenizer.json",
        tensor: "embeddings",
    },
    Layout {
        config: "config_sentence_transformers.json",
        safetensors: "model.safetensors",
        tokenizer: "tokenizer.json",
        tensor: "embedding.weight",
    },
    Layout {
        config: "config_sentence_transformers.json",
        safetensors: "0_StaticEmbedding/model.safetensors",
        tokenizer: "0_StaticEmbedding/tokenizer.json",
        tensor: "embedding.weight",
    },
];

impl StaticModel {
    /// The default model compiled into the binary.
    pub fn builtin() -> Result<Self, ModelError> {
        let bytes = ModelBytes {
            config: BUILTIN_CONFIG,
            tokenizer: BUILTIN_TOKENIZER,
            safetensors: BUILTIN_SAFETENSORS,
        };
        Self::from_bytes(BUILTIN_NAME, bytes)
    }

    /// Loads a model2vec directory (named after its last path component).
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let layout = LAYOUTS
            .iter()
            .find(|l| {
                [l.config, l.safetensors, l.tokenizer]
                    .iter()
                    .all(|f| dir.join(f).is_file())
            })
            .ok_or_else(|| ModelError::NoLayout { path: dir.to_owned() })?;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
        };
        let (config, tokenizer, safetensors) =
            (read(layout.config)?, read(layout.tokenizer)?, read(layout.safetensors)?);
        let name = dir
            .file_name()
            .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned());
        let bytes = ModelBytes {
            config: &config,
            tokenizer: &tokenizer,
            safetensors: &safetensors,
        };
        Self::load(name, bytes, layout.tensor)
    }

    /// Loads a model from the bytes of its three files (model2vec layout).
    pub fn from_bytes(name: &str, bytes: ModelBytes<'_>) -> Result<Self, ModelError> {
        Self::load(name.to_owned(), bytes, LAYOUTS[0].tensor)
    }

    fn load(name: String, bytes: ModelBytes<'_>, tensor_name: &'static str) -> Result<Self, ModelError> {
        let config = Config::from_json(bytes.config)?;
        let tokenizer = Tokenizer::from_json(bytes.tokenizer)?;
        let tensors =
            SafeTensors::deserialize(bytes.safetensors).map_err(|source| ModelError::SafeTensors { source })?;
        let (rows, n_rows, dim) = read_rows(&tensors, tensor_name)?;
        let mapping = read_mapping(&tensors, tokenizer.n_tokens(), n_rows)?;
        let weights = read_weights(&tensors, tokenizer.n_tokens())?;
        check_ids(&tokenizer, mapping.as_deref(), weights.as_deref(), n_rows)?;
        let checksum = [bytes.config, bytes.tokenizer, bytes.safetensors]
            .iter()
            .fold(0, |c, b| crc32c::crc32c_append(c, b));
        let identity = ModelIdentity {
            name,
            checksum,
            dim: dim as u32,
        };
        Ok(Self {
            unk_id: tokenizer.unk_id(),
            max_chars: config.max_tokens.saturating_mul(tokenizer.median_token_chars()),
            tokenizer,
            rows,
            dim,
            weights,
            mapping,
            normalize: config.normalize,
            max_tokens: config.max_tokens,
            identity,
        })
    }

    /// Tokenizes without any truncation (for comparing ids with the reference).
    #[cfg(test)]
    pub(super) fn tokenize_untruncated(&self, text: &str, scratch: &mut EmbedScratch) {
        self.tokenizer.encode(text, usize::MAX, scratch);
    }

    /// Adds each known token's (weighted) row to `out`; returns how many were added.
    fn sum_rows(&self, ids: &[u32], out: &mut [f32]) -> usize {
        let mut n_tokens = 0;
        for &id in ids.iter().filter(|&&id| id != self.unk_id) {
            let id = id as usize;
            let row = self.mapping.as_ref().map_or(id, |m| m[id] as usize);
            let weight = self.weights.as_ref().map_or(1.0, |w| w[id]);
            let range = row * self.dim..(row + 1) * self.dim;
            match &self.rows {
                Rows::F32(rows) => axpy(weight, &rows[range], out),
                Rows::I8(rows) => axpy_i8(weight, &rows[range], out),
            }
            n_tokens += 1;
        }
        n_tokens
    }
}

impl std::fmt::Debug for StaticModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticModel")
            .field("identity", &self.identity)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl Embedder for StaticModel {
    fn dim(&self) -> usize {
        self.dim
    }

    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn embed(&self, text: &str, scratch: &mut EmbedScratch, out: &mut [f32]) -> Result<usize, EmbedError> {
        check_dim(self.dim, out)?;
        self.tokenizer
            .encode(truncate_chars(text, self.max_chars), self.max_tokens, scratch);
        out.fill(0.0);
        let n_tokens = self.sum_rows(&scratch.ids, out);
        if n_tokens > 0 {
            let inv = 1.0 / n_tokens as f32;
            out.iter_mut().for_each(|x| *x *= inv);
            if self.normalize {
                l2_normalize(out);
            }
        }
        Ok(n_tokens)
    }
}

/// The settings of config.json that change the vectors (the rest is informational).
struct Config {
    normalize: bool,
    max_tokens: usize,
}

impl Config {
    fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
            file: "config.json",
            source,
        })?;
        let invalid = |field, reason| ModelError::InvalidField {
            file: "config.json",
            field,
            reason,
        };
        let root = root.as_object().ok_or(invalid("(root)", "expected an object"))?;
        if let Some(pooling) = root.get("pooling").filter(|p| !p.is_null()) {
            let pooling = pooling.as_str().ok_or(invalid("pooling", "expected a string"))?;
            if pooling != "mean" {
                return Err(ModelError::Unsupported {
                    component: "pooling",
                    kind: pooling.to_owned(),
                });
            }
        }
        let normalize = match root.get("normalize") {
            None | Some(Value::Null) => false, // model2vec's default
            Some(v) => v.as_bool().ok_or(invalid("normalize", "expected a boolean"))?,
        };
        // model2vec: absent → 512; null → no truncation.
        let max_tokens = match root.get("max_length") {
            None => DEFAULT_MAX_TOKENS,
            Some(Value::Null) => usize::MAX,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(invalid("max_length", "expected a non-negative integer or null"))?,
        };
        Ok(Self { normalize, max_tokens })
    }
}

/// Reads the embedding matrix; returns it with its row count and dimension.
fn read_rows(tensors: &SafeTensors<'_>, name: &'static str) -> Result<(Rows, usize, usize), ModelError> {
    let view = tensors.tensor(name).map_err(|_| ModelError::MissingTensor { name })?;
    let &[n_rows, dim] = view.shape() else {
        return Err(bad_shape(name, view.shape(), "[rows, dim]".to_owned()));
    };
    if n_rows == 0 || dim == 0 || dim > MAX_DIM {
        return Err(bad_shape(
            name,
            view.shape(),
            format!("[rows > 0, 0 < dim <= {MAX_DIM}]"),
        ));
    }
    let rows = match view.dtype() {
        Dtype::I8 => Rows::I8(view.data().iter().map(|&b| b as i8).collect()),
        _ => Rows::F32(floats(&view, name)?),
    };
    Ok((rows, n_rows, dim))
}

/// Per-token weights (`weights`, [tokens]), if the model has them.
fn read_weights(tensors: &SafeTensors<'_>, n_tokens: usize) -> Result<Option<Vec<f32>>, ModelError> {
    const NAME: &str = "weights";
    let Ok(view) = tensors.tensor(NAME) else {
        return Ok(None);
    };
    if view.shape() != [n_tokens] {
        return Err(bad_shape(NAME, view.shape(), format!("[{n_tokens}] (one per token)")));
    }
    floats(&view, NAME).map(Some)
}

/// Token id → row (`mapping`, [tokens]) of vocabulary-quantised models; without it,
/// the matrix must have one row per token.
fn read_mapping(tensors: &SafeTensors<'_>, n_tokens: usize, n_rows: usize) -> Result<Option<Vec<u32>>, ModelError> {
    const NAME: &str = "mapping";
    let Ok(view) = tensors.tensor(NAME) else {
        return match n_rows == n_tokens {
            true => Ok(None),
            false => Err(ModelError::VocabMismatch {
                tokens: n_tokens,
                rows: n_rows,
            }),
        };
    };
    if view.shape() != [n_tokens] {
        return Err(bad_shape(NAME, view.shape(), format!("[{n_tokens}] (one per token)")));
    }
    let raw: Vec<i64> = match view.dtype() {
        Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect(),
        Dtype::I32 => view
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap_or_default()).into())
            .collect(),
        other => return Err(unsupported_dtype(NAME, other, "I64, I32")),
    };
    raw.into_iter()
        .map(|row| {
            u32::try_from(row)
                .ok()
                .filter(|&r| (r as usize) < n_rows)
                .ok_or(out_of_range("mapping", row, n_rows))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Every id the tokenizer can produce must index the weights and the mapping (or
/// the rows directly), so embedding never indexes out of bounds.
fn check_ids(
    tokenizer: &Tokenizer,
    mapping: Option<&[u32]>,
    weights: Option<&[f32]>,
    n_rows: usize,
) -> Result<(), ModelError> {
    let max_id = tokenizer.max_id() as usize;
    let len = mapping
        .map_or(n_rows, <[u32]>::len)
        .min(weights.map_or(usize::MAX, <[f32]>::len));
    match max_id < len {
        true => Ok(()),
        false => Err(out_of_range("the tokenizer", max_id as i64, len)),
    }
}

/// Converts a float tensor to f32, rejecting NaN and infinities.
fn floats(view: &TensorView<'_>, name: &'static str) -> Result<Vec<f32>, ModelError> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
            .collect(),
        other => {
            return Err(unsupported_dtype(
                name,
                other,
                "F32, F16, BF16, F64, I8 (embeddings only)",
            ));
        }
    };
    match values.iter().all(|v| v.is_finite()) {
        true => Ok(values),
        false => Err(ModelError::NonFinite { tensor: name }),
    }
}

/// IEEE half → single precision (exact; subnormals included).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        (0, m) => {
            let value = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -value } else { value };
        }
        (0x1f, m) => 0x7f80_0000 | (m << 13),
        (e, m) => ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// `out += weight * row`.
fn axpy(weight: f32, row: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(row) {
        *o += weight * x;
    }
}

/// `out += weight * row` for an int8 row.
fn axpy_i8(weight: f32, row: &[i8], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(row) {
        *o += weight * f32::from(x);
    }
}

fn bad_shape(tensor: &'static str, shape: &[usize], expected: String) -> ModelError {
    ModelError::BadShape {
        tensor,
        shape: shape.to_vec(),
        expected,
    }
}

fn unsupported_dtype(tensor: &'static str, dtype: Dtype, supported: &'static str) -> ModelError {
    ModelError::UnsupportedDtype {
        tensor,
        dtype: format!("{dtype:?}"),
        supported,
    }
}

fn out_of_range(what: &'static str, id: i64, len: usize) -> ModelError {
    ModelError::IdOutOfRange {
        what,
        id: id.max(0) as u64,
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn truncate_chars_counts_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("ab", 5), "ab");
        assert_eq!(truncate_chars("", 0), "");
    }
}
