//! Hugging Face safetensors ⇄ one flat parameter buffer in [`ParamLayout`] order.
//!
//! Reads a single `model.safetensors` or a sharded `model.safetensors.index.json`, in F32, BF16, F16
//! or F64. Files are memory-mapped and converted straight into the flat buffer, so a checkpoint is
//! never held twice. With tied embeddings there is no `lm_head.weight`; one present anyway is ignored.

use crate::config::ModelConfig;
use crate::cpu::Float;
use crate::error::{publish, read_json, temp_sibling, write_atomic, Error, Result};
use crate::layout::ParamLayout;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The dtype weights are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    BF16,
}

impl SaveDtype {
    pub fn hf_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::BF16 => "bfloat16",
        }
    }
}

/// One memory-mapped safetensors file.
struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process; a checkpoint rewritten by another
        // process while we read it would give wrong numbers, never unsafety in our code (bytes are bytes).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile { path: path.to_path_buf(), map })
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map)
            .map_err(|e| Error::weights(&self.path, "", format!("not a valid safetensors file (truncated or corrupt?): {e}")))
    }
}

/// The weight files of a checkpoint folder and which file holds which tensor.
pub struct WeightFiles {
    /// what lists the tensors: `model.safetensors` or `model.safetensors.index.json` (for messages)
    source: PathBuf,
    files: Vec<MappedFile>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
}

impl WeightFiles {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        if single.exists() {
            let file = MappedFile::open(&single)?;
            let names: Vec<String> = file.parse()?.names().into_iter().map(str::to_string).collect();
            let index = names.into_iter().map(|n| (n, 0)).collect();
            return Ok(WeightFiles { source: single, files: vec![file], index });
        }
        if !sharded.exists() {
            return Err(Error::weights(dir, "", "no model.safetensors or model.safetensors.index.json in this folder"));
        }
        let idx = read_json(&sharded)?;
        let map = idx
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::config(&sharded, "weight_map", "missing or not an object"))?;
        let mut shard_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| Error::config(&sharded, format!("weight_map.{tensor}"), "expected a file name"))?;
            let k = match shard_of.get(file) {
                Some(&k) => k,
                None => {
                    files.push(MappedFile::open(&dir.join(file))?);
                    files.last().map(MappedFile::parse).transpose()?;
                    shard_of.insert(file.to_string(), files.len() - 1);
                    files.len() - 1
                }
            };
            index.insert(tensor.clone(), k);
        }
        Ok(WeightFiles { source: sharded, files, index })
    }

    /// (name, dtype, shape) of every tensor, sorted by name.
    pub fn tensors(&self) -> Result<Vec<(String, String, Vec<usize>)>> {
        let mut out = Vec::new();
        for f in &self.files {
            let st = f.parse()?;
            for (name, view) in st.tensors() {
                out.push((name, format!("{:?}", view.dtype()), view.shape().to_vec()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The checks of one tensor that need its header only: present, of `shape`, of a supported dtype,
    /// with a data length that matches. Returns its file and the element width in bytes.
    fn check_tensor(&self, name: &str, shape: &[usize]) -> Result<(&MappedFile, usize)> {
        let &k = self.index.get(name).ok_or_else(|| Error::weights(&self.source, name, "missing from the checkpoint"))?;
        let file = &self.files[k];
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| Error::weights(&file.path, name, format!("unreadable: {e}")))?;
        if view.shape() != shape {
            return Err(Error::weights(
                &file.path,
                name,
                format!("has shape {:?}, expected {:?} from config.json", view.shape(), shape),
            ));
        }
        let width = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::BF16 | Dtype::F16 => 2,
            other => {
                return Err(Error::weights(&file.path, name, format!("dtype {other:?} is not supported (F32, F64, BF16, F16 are)")))
            }
        };
        if view.data().len() != shape.iter().product::<usize>() * width {
            return Err(Error::weights(&file.path, name, "data length does not match its shape and dtype"));
        }
        Ok((file, width))
    }

    /// Checks the checkpoint against `layout` from the safetensors headers alone (no tensor data is
    /// read, nothing is allocated): no surplus tensor, and every tensor of the layout present with its
    /// shape, a supported dtype and a matching data length. Loading runs it before allocating the
    /// parameter buffer and `drpo inspect` runs it as is, so both fail the same way, naming the tensor.
    pub fn check_layout(&self, layout: &ParamLayout) -> Result<()> {
        self.check_no_surplus(layout)?;
        for e in &layout.entries {
            self.check_tensor(&e.name, &e.shape)?;
        }
        Ok(())
    }

    /// Converts one tensor into `dst` (after [`Self::check_tensor`]); a value that is not finite
    /// once converted (NaN, ±inf, or an F64 beyond the range of `T`) is an error naming the tensor and
    /// the element's index.
    fn read_into<T: Float>(&self, name: &str, shape: &[usize], dst: &mut [T]) -> Result<()> {
        let (file, width) = self.check_tensor(name, shape)?;
        let st = file.parse()?;
        let view = st.tensor(name).map_err(|e| Error::weights(&file.path, name, format!("unreadable: {e}")))?;
        let dtype = view.dtype();
        for (i, (d, b)) in dst.iter_mut().zip(view.data().chunks_exact(width)).enumerate() {
            let stored = match dtype {
                Dtype::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                Dtype::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                Dtype::BF16 => f64::from(half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
                _ => f64::from(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            };
            // every narrower dtype is exact in f64, so from_f64 rounds once, as from_f32 did
            *d = T::from_f64(stored);
            if !d.to_f64().is_finite() {
                let what = if stored.is_finite() {
                    format!("element {} = {stored:e} overflows {}: the weights must be finite", element_index(i, shape), T::NAME)
                } else {
                    format!("element {} is {stored}: the checkpoint holds non-finite weights", element_index(i, shape))
                };
                return Err(Error::weights(&file.path, name, what));
            }
        }
        Ok(())
    }

    /// Tensors of the checkpoint that `layout` does not read, sorted; an error when there are any
    /// (a config with fewer layers than the checkpoint would otherwise load a truncated model).
    /// Allowed: `lm_head.weight` when the embeddings are tied (the loader ignores it) and rotary
    /// `inv_freq` buffers that some older checkpoints store (recomputed from the config).
    fn check_no_surplus(&self, layout: &ParamLayout) -> Result<()> {
        let wanted: HashSet<&str> = layout.entries.iter().map(|e| e.name.as_str()).collect();
        let mut surplus: Vec<&str> = self
            .index
            .keys()
            .map(String::as_str)
            .filter(|n| !wanted.contains(n))
            .filter(|n| !(layout.tied && *n == "lm_head.weight"))
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        if surplus.is_empty() {
            return Ok(());
        }
        surplus.sort_unstable();
        let shown = surplus.iter().take(5).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let more = if surplus.len() > 5 { format!(" and {} more", surplus.len() - 5) } else { String::new() };
        Err(Error::weights(
            &self.source,
            "",
            format!(
                "{} tensor(s) that config.json does not account for: {shown}{more}\n  hint: does config.json \
                 (num_hidden_layers, tie_word_embeddings) belong to these weights?",
                surplus.len()
            ),
        ))
    }
}

/// The config of the checkpoint in `dir`, after [`WeightFiles::check_layout`] (headers only): what a
/// command reads before its memory estimate, so a config that does not match its weights is named as
/// such (the tensor, the shapes) rather than as an absurd memory need.
pub fn checked_config(dir: &Path) -> Result<ModelConfig> {
    let cfg = ModelConfig::from_dir(dir)?;
    WeightFiles::open(dir)?.check_layout(&ParamLayout::new(&cfg))?;
    Ok(cfg)
}

/// Loads every parameter of `layout` from the checkpoint folder `dir` into one flat buffer.
/// Every tensor of the checkpoint must be read (see [`WeightFiles`]'s surplus check).
/// The headers are checked first ([`WeightFiles::check_layout`]), then the buffer's size against the
/// memory available, and only then is anything allocated.
pub fn load_params<T: Float>(dir: &Path, layout: &ParamLayout) -> Result<Vec<T>> {
    let files = WeightFiles::open(dir)?;
    files.check_layout(layout)?;
    let weights = (layout.total as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let est = crate::memory::MemoryEstimate { weights, ..Default::default() };
    crate::memory::ensure_fits(&format!("loading the weights of {} in {}", dir.display(), T::NAME), &est)?;
    let mut params = vec![T::ZERO; layout.total];
    for e in &layout.entries {
        files.read_into(&e.name, &e.shape, &mut params[e.range()])?;
    }
    Ok(params)
}

/// `[i, j, …]` of flat index `flat` in a tensor of `shape` (row-major), with the flat index.
fn element_index(flat: usize, shape: &[usize]) -> String {
    let mut rest = flat;
    let mut idx = vec![0; shape.len()];
    for (k, &n) in shape.iter().enumerate().rev() {
        idx[k] = rest % n.max(1);
        rest /= n.max(1);
    }
    format!("{idx:?} (flat index {flat})")
}

/// One tensor for [`write_safetensors_atomic`]: a slice of a flat buffer, converted to `dtype` (F32,
/// F64 or BF16) only when the writer asks for its bytes, so a save holds one converted tensor at a time.
pub struct TensorOut<'a, T: Float> {
    values: &'a [T],
    shape: Vec<usize>,
    dtype: Dtype,
}

impl<'a, T: Float> TensorOut<'a, T> {
    pub fn new(values: &'a [T], shape: Vec<usize>, dtype: Dtype) -> Self {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "TensorOut: values do not match the shape");
        assert!(matches!(dtype, Dtype::F32 | Dtype::F64 | Dtype::BF16), "TensorOut: dtype {dtype:?} is not written");
        TensorOut { values, shape, dtype }
    }
}

impl<T: Float> safetensors::View for TensorOut<'_, T> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let v = self.values;
        let bytes: Vec<u8> = match self.dtype {
            Dtype::F64 => v.iter().flat_map(|x| x.to_f64().to_le_bytes()).collect(),
            Dtype::F32 => v.iter().flat_map(|x| (x.to_f64() as f32).to_le_bytes()).collect(),
            // through f32: half's bf16::from_f64 drops the low f64 bits before rounding (double rounding)
            _ => v.iter().flat_map(|x| half::bf16::from_f32(x.to_f64() as f32).to_bits().to_le_bytes()).collect(),
        };
        std::borrow::Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.values.len() * self.dtype.bitsize() / 8
    }
}

/// Writes a safetensors file atomically (a temp file in the same folder, fsync, rename), converting
/// one tensor at a time: the extra memory is one tensor's bytes, never the whole file. The layout is
/// `safetensors::serialize`'s (sorted by dtype, then name; 8-byte-aligned header).
pub fn write_safetensors_atomic<T: Float>(
    path: &Path,
    tensors: Vec<(String, TensorOut<'_, T>)>,
    meta: HashMap<String, String>,
) -> Result<()> {
    let tmp = temp_sibling(path)?;
    let written = safetensors::tensor::serialize_to_file(tensors, Some(meta), &tmp)
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => Error::io(&tmp, io),
            other => Error::weights(path, "", format!("cannot serialize safetensors: {other}")),
        })
        .and_then(|()| {
            // serialize_to_file flushes but does not fsync
            let f = std::fs::OpenOptions::new().write(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    publish(&tmp, path)
}

/// Writes `dir/model.safetensors` (HF names and shapes, atomically, one tensor converted at a time)
/// and `dir/config.json`.
pub fn save_params<T: Float>(dir: &Path, cfg: &ModelConfig, layout: &ParamLayout, params: &[T], dtype: SaveDtype) -> Result<()> {
    assert_eq!(params.len(), layout.total, "save_params: buffer does not match the layout");
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::BF16 => Dtype::BF16,
    };
    let tensors = layout.entries.iter().map(|e| (e.name.clone(), TensorOut::new(&params[e.range()], e.shape.clone(), st_dtype))).collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    write_safetensors_atomic(&dir.join("model.safetensors"), tensors, meta)?;
    let mut cfg = cfg.clone();
    cfg.torch_dtype = Some(dtype.hf_name().into());
    let text = serde_json::to_string_pretty(&cfg.to_json()).map_err(|e| Error::json(dir.join("config.json"), e))?;
    write_atomic(dir.join("config.json"), text.as_bytes())
}
