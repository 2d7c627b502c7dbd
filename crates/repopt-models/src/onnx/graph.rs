//! A small builder over the ONNX protobuf messages: initializers, nodes, typed graph inputs
//! and outputs, and the model around them.
//!
//! The messages come from `onnx-protobuf`, whose code was generated from the official
//! `onnx.proto` ahead of time with the pure-Rust `protobuf` 3 code generator: nothing runs
//! `protoc` when this crate builds, and `protobuf` 3 is small, pure Rust and maintained.
//! The heavier alternatives either generate code at build time (needing `protoc` on the
//! machine) or come inside a whole inference runtime.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto;
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{ModelError, Result};

/// The operator set the graphs use: the first with per-axis `QuantizeLinear` /
/// `DequantizeLinear`, so every runtime that reads QDQ graphs reads these.
pub(crate) const OPSET: i64 = 13;

/// IR version 7 came with opset 13; the oldest runtimes that know the operators load it.
const IR_VERSION: i64 = 7;

/// Protobuf parsers refuse messages of 2 GiB or more; larger models would need ONNX's
/// external-data files.
const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;

/// A graph input or output dimension.
pub(crate) enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// A node attribute.
pub(crate) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
}

/// A graph under construction.
#[derive(Default)]
pub(crate) struct Graph {
    graph: GraphProto,
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

pub(crate) fn check_finite(name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(ModelError::Export(format!(
            "tensor '{name}' holds a non-finite value ({}) at index {i}",
            data[i]
        ))),
        None => Ok(()),
    }
}

impl Graph {
    fn initializer(&mut self, name: &str, data_type: DataType, shape: &[usize], raw: Vec<u8>) {
        self.graph.initializer.push(TensorProto {
            name: name.to_string(),
            dims: dims(shape),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
    }

    /// An f32 initializer (little-endian raw data, as the format prescribes).
    pub(crate) fn f32s(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<String> {
        check_finite(name, data)?;
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, DataType::FLOAT, shape, raw);
        Ok(name.to_string())
    }

    /// An int8 initializer.
    pub(crate) fn i8s(&mut self, name: &str, shape: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.initializer(name, DataType::INT8, shape, raw);
        name.to_string()
    }

    /// A uint8 initializer.
    pub(crate) fn u8s(&mut self, name: &str, shape: &[usize], data: &[u8]) -> String {
        self.initializer(name, DataType::UINT8, shape, data.to_vec());
        name.to_string()
    }

    /// Adds a node named `name` whose single output is also called `name`.
    pub(crate) fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let attribute = attrs
            .into_iter()
            .map(|(key, value)| {
                let mut a = AttributeProto {
                    name: key.to_string(),
                    ..Default::default()
                };
                match value {
                    Attr::Int(i) => {
                        a.type_ = AttributeType::INT.into();
                        a.i = i;
                    }
                    Attr::Ints(v) => {
                        a.type_ = AttributeType::INTS.into();
                        a.ints = v;
                    }
                }
                a
            })
            .collect();
        self.graph.node.push(NodeProto {
            name: name.to_string(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            attribute,
            ..Default::default()
        });
        name.to_string()
    }

    fn value_info(name: &str, shape: &[Dim]) -> ValueInfoProto {
        let dim = shape
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                    Dim::Named(p) => dimension::Value::DimParam(p.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        let tensor = type_proto::Tensor {
            elem_type: DataType::FLOAT as i32,
            shape: Some(TensorShapeProto {
                dim,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        ValueInfoProto {
            name: name.to_string(),
            type_: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(tensor)),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    /// Declares an f32 graph input.
    pub(crate) fn input(&mut self, name: &str, shape: &[Dim]) -> String {
        self.graph.input.push(Self::value_info(name, shape));
        name.to_string()
    }

    /// Declares an f32 graph output.
    pub(crate) fn output(&mut self, name: &str, shape: &[Dim]) {
        self.graph.output.push(Self::value_info(name, shape));
    }

    /// The serialized `ModelProto`.
    pub(crate) fn finish(
        mut self,
        graph_name: &str,
        doc: String,
        metadata: Vec<(String, String)>,
    ) -> Result<Vec<u8>> {
        self.graph.name = graph_name.to_string();
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
                ..Default::default()
            }],
            producer_name: "repopt".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc,
            graph: Some(self.graph).into(),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto {
                    key,
                    value,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let size = model.compute_size();
        if size > MAX_MODEL_BYTES {
            return Err(ModelError::Export(format!(
                "the model needs {size} bytes, over the 2 GiB a single ONNX file can hold"
            )));
        }
        model
            .write_to_bytes()
            .map_err(|e| ModelError::Export(format!("encoding the model failed: {e}")))
    }
}
