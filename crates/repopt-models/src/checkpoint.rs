//! Named tensors on disk as safetensors, with a small JSON-valued metadata block, written
//! atomically (temporary file, then rename) so a crash never leaves a half-written file in
//! place of a good one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use repopt_tensor::Gpu;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::HostTensor;
use crate::any::{NetConfig, Network, SavedModel};
use crate::config::Mode;
use crate::error::{ModelError, Result};
use crate::quant::network::layer_names;
use crate::quant::qat::QatConfig;

/// The contents of a tensor file.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    /// Tensors in file order (sorted by name: safetensors stores them so).
    pub tensors: Vec<HostTensor>,
    /// String metadata (this project stores JSON values in it).
    pub metadata: BTreeMap<String, String>,
}

fn io_err(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn bad(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Saves tensors and metadata as a safetensors file, atomically.
///
/// ```no_run
/// use repopt_models::{checkpoint::save_tensors, HostTensor};
/// let t = HostTensor { name: "stage0.scale_conv.weight".into(), shape: vec![2], data: vec![1.0, 0.5] };
/// save_tensors("scales.safetensors".as_ref(), &[t], &Default::default())?;
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn save_tensors(
    path: &Path,
    tensors: &[HostTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(bad(
                path,
                format!(
                    "tensor '{}' has {} values for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            ));
        }
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
            .map_err(|e| bad(path, format!("tensor '{}': {e}", t.name)))?;
        views.push((t.name.clone(), view));
    }
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Reads a safetensors file (f32, f16, bf16 and f64 tensors become f32; integer tensors
/// such as PyTorch's `num_batches_tracked` are skipped).
pub fn load_tensors(path: &Path) -> Result<TensorFile> {
    let bytes = crate::regular_file::read(path, u64::MAX).map_err(|e| io_err(path, e))?;
    parse_tensors(&bytes, path)
}

/// [`load_tensors`] from bytes in memory; `path` names the source in errors.
pub fn parse_tensors(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(path, e.to_string()))?;
    let metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors = Vec::new();
    let mut named = st.tensors();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in named {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => continue,
            other => {
                return Err(bad(
                    path,
                    format!("tensor '{name}' has unsupported dtype {other:?}"),
                ));
            }
        };
        tensors.push(HostTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok(TensorFile { tensors, metadata })
}

/// Metadata keys of model files.
pub mod keys {
    /// Always "repopt".
    pub const FORMAT: &str = "format";
    /// The [`NetConfig`](crate::any::NetConfig) as JSON (a VGG config reads as before).
    pub const CONFIG: &str = "config";
    /// The [`Mode`](crate::Mode) name.
    pub const MODE: &str = "mode";
    /// The [`QatConfig`](crate::quant::qat::QatConfig) as JSON, for a deploy model that
    /// trains with fake quantization (absent otherwise).
    pub const QAT: &str = "qat";
}

/// The state of `model` as host tensors.
pub fn model_tensors(model: &impl SavedModel) -> Result<Vec<HostTensor>> {
    model
        .state()
        .into_iter()
        .map(|(name, t)| {
            Ok(HostTensor {
                shape: t.shape().to_vec(),
                data: t.to_vec()?,
                name,
            })
        })
        .collect()
}

/// Metadata that lets [`load_model`] rebuild `model`.
pub fn model_metadata(model: &impl SavedModel) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(keys::FORMAT.into(), "repopt".into());
    m.insert(
        keys::CONFIG.into(),
        serde_json::to_string(&model.net_config()).unwrap_or_default(),
    );
    m.insert(keys::MODE.into(), model.mode().name().into());
    if let Some(q) = model.qat_config() {
        m.insert(
            keys::QAT.into(),
            serde_json::to_string(&q).unwrap_or_default(),
        );
    }
    m
}

/// Saves a model (weights, running statistics, config and mode) atomically.
pub fn save_model(
    path: &Path,
    model: &impl SavedModel,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta = model_metadata(model);
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    save_tensors(path, &model_tensors(model)?, &meta)
}

/// The config and mode recorded in a model file's metadata.
pub fn model_description(file: &TensorFile, path: &Path) -> Result<(NetConfig, Mode)> {
    let config = file.metadata.get(keys::CONFIG).ok_or_else(|| {
        bad(
            path,
            "no 'config' in the metadata: not a model file written by repopt",
        )
    })?;
    let config: NetConfig = serde_json::from_str(config).map_err(|e| {
        bad(
            path,
            format!("metadata 'config' is not a valid config: {e}"),
        )
    })?;
    let mode = file
        .metadata
        .get(keys::MODE)
        .ok_or_else(|| bad(path, "no 'mode' in the metadata"))?
        .parse::<Mode>()
        .map_err(|e| bad(path, format!("metadata 'mode': {e}")))?;
    Ok((config, mode))
}

/// Loads a model saved by [`save_model`] onto `gpu`.
pub fn load_model(gpu: &Gpu, path: &Path) -> Result<Network> {
    model_from_file(gpu, &load_tensors(path)?, path)
}

/// The model a file read from `path` describes, with its state loaded: the network its
/// metadata names, with fake quantization attached again when it trained with it (the
/// quantized layers are those whose ranges the file holds).
pub fn model_from_file(gpu: &Gpu, file: &TensorFile, path: &Path) -> Result<Network> {
    let (config, mode) = model_description(file, path)?;
    let mut model = Network::new(gpu, &config, mode, 0)?;
    if let Some(text) = file.metadata.get(keys::QAT) {
        let qat: QatConfig = serde_json::from_str(text)
            .map_err(|e| bad(path, format!("metadata 'qat' is not a valid setting: {e}")))?;
        let Network::Vgg(vgg) = &mut model else {
            return Err(bad(path, "metadata 'qat' on a model that cannot quantize"));
        };
        // Placeholder ranges: loading the state replaces them.
        let ranges: Vec<Option<f32>> = layer_names(vgg)
            .iter()
            .map(|n| {
                let name = format!("quant.{n}.act_max");
                file.tensors.iter().any(|t| t.name == name).then_some(1.0)
            })
            .collect();
        vgg.attach_qat(qat, &ranges)?;
    }
    model.load_state(&file.tensors, &path.display().to_string())?;
    Ok(model)
}
