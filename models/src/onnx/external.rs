//! ONNX external data: tensors whose bytes live in files beside the graph (how graphs over
//! 2 GB, the protobuf limit, are saved, and what `onnx.save_model(...,
//! save_as_external_data=True)` writes). A tensor names its file in `external_data`
//! (`location`, relative to the graph's directory); ONNX Runtime reads it from there when it
//! opens the graph from a path. Importing such a graph copies those files into the version
//! beside the graph, with the same relative names, so it opens the same way from the registry.
//!
//! Only the fields that say where tensors live are declared here (decode-only prost
//! messages with onnx.proto's tags; weights and everything else are skipped unread).

use std::collections::BTreeSet;
use std::path::{Component, Path};

use crate::error::{ModelError, ModelResult};

#[derive(Clone, PartialEq, prost::Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Graph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<Node>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<Tensor>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Attribute {
    #[prost(message, optional, tag = "5")]
    t: Option<Tensor>,
    #[prost(message, optional, boxed, tag = "6")]
    g: Option<Box<Graph>>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<Tensor>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<Graph>,
    #[prost(message, optional, tag = "22")]
    sparse_tensor: Option<SparseTensor>,
    #[prost(message, repeated, tag = "23")]
    sparse_tensors: Vec<SparseTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SparseTensor {
    #[prost(message, optional, tag = "1")]
    values: Option<Tensor>,
    #[prost(message, optional, tag = "2")]
    indices: Option<Tensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tensor {
    #[prost(string, tag = "8")]
    name: String,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<Entry>,
    /// 1 = EXTERNAL.
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// The external-data files of a graph: relative paths inside its directory, normalised
/// (`/`-separated, no `.`), sorted and without repeats. Only [`external_files`] makes a
/// non-empty one, so holding one means its names were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalFiles(Vec<String>);

impl ExternalFiles {
    /// The file names.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// The files a graph's tensors keep their bytes in (empty for a self-contained graph);
/// `None` when the bytes do not decode as an ONNX model (ONNX Runtime then says why, opening
/// it). Fails on a location that could leave the graph's directory (absolute, or with `..`):
/// such a graph would read any file the server can.
pub fn external_files(graph: &[u8]) -> ModelResult<Option<ExternalFiles>> {
    let Ok(model) = <Model as prost::Message>::decode(graph) else {
        return Ok(None);
    };
    let mut files = BTreeSet::new();
    if let Some(g) = &model.graph {
        collect_graph(g, &mut files)?;
    }
    Ok(Some(ExternalFiles(files.into_iter().collect())))
}

fn collect_graph(g: &Graph, files: &mut BTreeSet<String>) -> ModelResult<()> {
    for t in &g.initializer {
        collect_tensor(t, files)?;
    }
    for s in &g.sparse_initializer {
        collect_sparse(s, files)?;
    }
    for n in &g.node {
        for a in &n.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                collect_tensor(t, files)?;
            }
            for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
                collect_sparse(s, files)?;
            }
            for sub in a.g.iter().map(|b| b.as_ref()).chain(&a.graphs) {
                collect_graph(sub, files)?;
            }
        }
    }
    Ok(())
}

fn collect_sparse(s: &SparseTensor, files: &mut BTreeSet<String>) -> ModelResult<()> {
    for t in s.values.iter().chain(&s.indices) {
        collect_tensor(t, files)?;
    }
    Ok(())
}

fn collect_tensor(t: &Tensor, files: &mut BTreeSet<String>) -> ModelResult<()> {
    let location = t
        .external_data
        .iter()
        .find(|e| e.key == "location")
        .map(|e| e.value.as_str());
    match location {
        Some(loc) => {
            let name = contained_path(loc).map_err(|why| {
                ModelError::InvalidInput(format!(
                    "tensor \"{}\" keeps its data in \"{loc}\", which {why}",
                    t.name
                ))
            })?;
            files.insert(name);
            Ok(())
        }
        None if t.data_location == 1 => Err(ModelError::InvalidInput(format!(
            "tensor \"{}\" keeps its data in an external file but names none",
            t.name
        ))),
        None => Ok(()),
    }
}

/// `path` as a relative path inside its directory, normalised (`/`-separated, `.` parts
/// dropped), or why it is refused: absolute, with `..`, with a backslash or NUL, or naming
/// no file. External-data locations and the payload names of a model version (which the
/// registry checks again when it reads them) both go through here.
pub fn contained_path(path: &str) -> Result<String, &'static str> {
    if path.contains('\\') || path.contains('\0') {
        return Err("is not a plain relative path");
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or("is not UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => return Err("leaves the graph's directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    if parts.is_empty() {
        return Err("names no file");
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn tensor(name: &str, location: Option<&str>) -> Tensor {
        Tensor {
            name: name.into(),
            external_data: location
                .map(|l| {
                    vec![
                        Entry {
                            key: "location".into(),
                            value: l.into(),
                        },
                        Entry {
                            key: "offset".into(),
                            value: "0".into(),
                        },
                    ]
                })
                .unwrap_or_default(),
            data_location: i32::from(location.is_some()),
        }
    }

    fn model(initializer: Vec<Tensor>, nested: Vec<Tensor>) -> Vec<u8> {
        let sub = Graph {
            initializer: nested,
            ..Graph::default()
        };
        Model {
            graph: Some(Graph {
                initializer,
                node: vec![Node {
                    attribute: vec![Attribute {
                        g: Some(Box::new(sub)),
                        ..Attribute::default()
                    }],
                }],
                ..Graph::default()
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn lists_every_file_once_including_subgraphs() {
        let bytes = model(
            vec![
                tensor("w", Some("weights.bin")),
                tensor("b", Some("weights.bin")),
                tensor("inline", None),
            ],
            vec![tensor("loop_w", Some("sub/loop.bin"))],
        );
        assert_eq!(
            external_files(&bytes).expect("files"),
            Some(ExternalFiles(vec![
                "sub/loop.bin".to_string(),
                "weights.bin".to_string()
            ]))
        );
        assert_eq!(
            external_files(&model(vec![tensor("x", None)], vec![])).expect("none"),
            Some(ExternalFiles::default())
        );
        // The same file written two ways is one name, in its plain form.
        let dotted = model(
            vec![tensor("a", Some("./w.bin")), tensor("b", Some("w.bin"))],
            vec![],
        );
        assert_eq!(
            external_files(&dotted)
                .expect("files")
                .expect("onnx")
                .names(),
            ["w.bin".to_string()]
        );
    }

    #[test]
    fn locations_outside_the_directory_are_refused() {
        for bad in ["../secret.bin", "/etc/passwd", "a/../../b", "", "a\\..\\b"] {
            let err = external_files(&model(vec![tensor("w", Some(bad))], vec![]))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("tensor \"w\""), "{bad}: {err}");
        }
        let mut no_name = tensor("w", None);
        no_name.data_location = 1;
        assert!(external_files(&model(vec![no_name], vec![])).is_err());
        assert_eq!(
            external_files(b"\xff\xff\xff not protobuf").expect("no error"),
            None
        );
    }
}
