//! `EXPORT MODEL`: a model trained by prognos written as an ONNX-ML graph that any ONNX
//! Runtime scores as prognos does.
//!
//! The graph takes one `[N, 1]` input per feature, named after it (`float` for numbers and
//! booleans, `string` for text), and rebuilds the model's preprocessing as nodes: a text
//! feature's categories become their category bins through a `LabelEncoder` (unseen values
//! and the empty string — what a NULL is sent as — land in the missing bin, as they do in
//! prognos), a NULL number is NaN. Trees become one `ai.onnx.ml` opset 5 `TreeEnsemble`,
//! whose set-membership nodes express prognos's categorical splits exactly; then the link
//! (sigmoid with the Platt calibration, softmax, or a forest's averaging). Linear and logistic
//! models and k-means rebuild their design in double precision, as prognos computes it
//! (standardised numbers with NULL as the mean, categories one-hot from their codes), then the
//! weights (a `MatMul`) or the distances to the centroids. Classifiers answer `label` (the
//! class, as text) and `probabilities` (`[N, classes]`), regressions `variable` (`[N, 1]`), as
//! scikit-learn exports do, and k-means `label` (the cluster, int64). Date and timestamp
//! features cannot be exported yet. A perceptron (`USING mlp`) becomes its input vector
//! (standardised numbers and missing indicators, embedding rows looked up with `Gather`),
//! `Gemm` + `Relu` layers and the same head.

use prost::Message;

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, attribute_type, data_type,
};
use crate::error::{ModelError, ModelResult};
use crate::features::FeatureKind;
use crate::gbdt::binning::cat_bin;
use crate::gbdt::tree::set_has;
use crate::gbdt::{Combine, Ensemble, Objective};
use crate::linear::{ColumnEncoding, Design, KMeans, LinearModel};
use crate::mlp::{Head, InputColumn, MlpModel};
use crate::model::{Estimator, ModelArtifact};
use crate::target::TargetKind;

/// Graph builder: nodes, constants, inputs and outputs, with fresh value names.
#[derive(Default)]
struct Builder {
    graph: GraphProto,
    next: usize,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints,
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

fn attr_floats(name: &str, floats: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        floats,
        r#type: attribute_type::FLOATS,
        ..Default::default()
    }
}

fn attr_strings(name: &str, strings: Vec<String>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        strings: strings.into_iter().map(String::into_bytes).collect(),
        r#type: attribute_type::STRINGS,
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(t),
        r#type: attribute_type::TENSOR,
        ..Default::default()
    }
}

fn floats_tensor(dims: Vec<i64>, data: Vec<f32>) -> TensorProto {
    TensorProto {
        dims,
        data_type: data_type::FLOAT,
        float_data: data,
        ..Default::default()
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Some(v) => Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            None => Dimension {
                                dim_value: None,
                                dim_param: Some("N".into()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Add a node; returns its (single) output's name.
    fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        output: Option<&str>,
    ) -> String {
        let out = output
            .map(str::to_string)
            .unwrap_or_else(|| self.fresh(&op.to_ascii_lowercase()));
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name,
            op_type: op.into(),
            attribute: attributes,
            domain: domain.into(),
        });
        out
    }

    /// A constant float tensor.
    fn constant(&mut self, dims: Vec<i64>, data: Vec<f32>) -> String {
        let name = self.fresh("const");
        let mut t = floats_tensor(dims, data);
        t.name = name.clone();
        self.graph.initializer.push(t);
        name
    }

    /// A constant double tensor.
    fn constant_f64(&mut self, dims: Vec<i64>, data: Vec<f64>) -> String {
        let name = self.fresh("const");
        self.graph.initializer.push(TensorProto {
            dims,
            data_type: data_type::DOUBLE,
            double_data: data,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// A constant int64 tensor.
    fn constant_i64(&mut self, dims: Vec<i64>, data: Vec<i64>) -> String {
        let name = self.fresh("const");
        self.graph.initializer.push(TensorProto {
            dims,
            data_type: data_type::INT64,
            int64_data: data,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn cast(&mut self, x: &str, to: i32) -> String {
        self.node("Cast", "", &[x], vec![attr_int("to", i64::from(to))], None)
    }
}

/// The ONNX graph of `artifact`, serialised.
pub fn export(artifact: &ModelArtifact) -> ModelResult<Vec<u8>> {
    let categories = match &artifact.estimator {
        Estimator::Trees(_) => Categories::Bins,
        Estimator::Linear(_) | Estimator::Kmeans(_) | Estimator::Mlp(_) => Categories::Codes,
        _ => {
            return Err(ModelError::InvalidInput(format!(
                "EXPORT MODEL writes gbdt, random_forest, linear, logistic, mlp and kmeans \
                 models; this one is {}",
                artifact.algorithm.name()
            )));
        }
    };
    let mut b = Builder::default();
    let columns = feature_columns(&mut b, artifact, categories)?;
    match &artifact.estimator {
        Estimator::Trees(ensemble) => trees(&mut b, artifact, ensemble, &columns)?,
        Estimator::Linear(model) => linear(&mut b, artifact, model, &columns)?,
        Estimator::Kmeans(model) => kmeans(&mut b, model, &columns),
        Estimator::Mlp(model) => mlp(&mut b, artifact, model, &columns)?,
        _ => {
            return Err(ModelError::InvalidInput(
                "EXPORT MODEL cannot write this model".into(),
            ));
        }
    }
    b.graph.name = "prognos".into();
    let model = ModelProto {
        ir_version: 10,
        producer_name: "prognos".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{} model exported by prognos; inputs: one [N, 1] tensor per feature",
            artifact.algorithm.name()
        ),
        graph: Some(b.graph),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 21,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 5,
            },
        ],
    };
    Ok(model.encode_to_vec())
}

/// How a text feature enters the model's matrix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Categories {
    /// Its category bin (trees).
    Bins,
    /// Its category code, `-1` when unseen or NULL (one-hot designs).
    Codes,
}

/// One `[N, 1]` input per feature, each turned into one float matrix column (NaN = missing).
fn feature_columns(
    b: &mut Builder,
    artifact: &ModelArtifact,
    categories: Categories,
) -> ModelResult<Vec<String>> {
    let mut columns = Vec::new();
    for f in &artifact.features.features {
        match &f.kind {
            FeatureKind::Numeric | FeatureKind::Boolean => {
                b.graph
                    .input
                    .push(value_info(&f.name, data_type::FLOAT, &[None, Some(1)]));
                columns.push(f.name.clone());
            }
            FeatureKind::Categorical { categories: values } => {
                b.graph
                    .input
                    .push(value_info(&f.name, data_type::STRING, &[None, Some(1)]));
                let (codes, default) = match categories {
                    Categories::Bins => (
                        (0..values.len())
                            .map(|c| f32::from(cat_bin(c as f32)))
                            .collect(),
                        f32::from(cat_bin(f32::NAN)),
                    ),
                    Categories::Codes => ((0..values.len()).map(|c| c as f32).collect(), -1.0),
                };
                let col = b.node(
                    "LabelEncoder",
                    "ai.onnx.ml",
                    &[&f.name],
                    vec![
                        attr_strings("keys_strings", values.clone()),
                        attr_floats("values_floats", codes),
                        attr_float("default_float", default),
                    ],
                    None,
                );
                columns.push(col);
            }
            FeatureKind::Temporal => {
                return Err(ModelError::InvalidInput(format!(
                    "EXPORT MODEL cannot write date or timestamp features yet (\"{}\")",
                    f.name
                )));
            }
        }
    }
    Ok(columns)
}

fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// The class labels of a classifier's target.
fn class_labels(artifact: &ModelArtifact) -> ModelResult<&[String]> {
    match artifact.target.as_ref().map(|t| &t.kind) {
        Some(TargetKind::Classes { labels }) => Ok(labels),
        _ => Err(ModelError::InvalidInput(
            "the model's target has no classes".into(),
        )),
    }
}

/// `probabilities` ([N, 2]) from P(second class) ([N, 1]).
fn both_classes(b: &mut Builder, p: &str) -> String {
    let one = b.constant(vec![1], vec![1.0]);
    let q = b.node("Sub", "", &[&one, p], vec![], None);
    b.node(
        "Concat",
        "",
        &[&q, p],
        vec![attr_int("axis", 1)],
        Some("probabilities"),
    )
}

/// `probabilities` ([N, 2]) from a binary model's float log-odds ([N, 1]): the Platt
/// calibration when the model has one, then the sigmoid.
fn binary_probabilities(b: &mut Builder, artifact: &ModelArtifact, logit: &str) -> String {
    let logit = match &artifact.calibration {
        Some(c) => {
            let a = b.constant(vec![1], vec![c.a as f32]);
            let bias = b.constant(vec![1], vec![c.b as f32]);
            let scaled = b.node("Mul", "", &[logit, &a], vec![], None);
            b.node("Add", "", &[&scaled, &bias], vec![], None)
        }
        None => logit.to_string(),
    };
    let p = b.node("Sigmoid", "", &[&logit], vec![], None);
    both_classes(b, &p)
}

/// `label` (the most probable class, as text) and the graph's outputs of a classifier whose
/// `probabilities` are built.
fn classifier_outputs(b: &mut Builder, probabilities: &str, labels: &[String]) {
    let index = b.node(
        "ArgMax",
        "",
        &[probabilities],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
        None,
    );
    b.node(
        "LabelEncoder",
        "ai.onnx.ml",
        &[&index],
        vec![
            attr_ints("keys_int64s", (0..labels.len() as i64).collect()),
            attr_strings("values_strings", labels.to_vec()),
            AttributeProto {
                name: "default_string".into(),
                s: Vec::new(),
                r#type: attribute_type::STRING,
                ..Default::default()
            },
        ],
        Some("label"),
    );
    b.graph
        .output
        .push(value_info("label", data_type::STRING, &[None]));
    b.graph.output.push(value_info(
        "probabilities",
        data_type::FLOAT,
        &[None, Some(labels.len() as i64)],
    ));
}

/// A regression's `variable` output.
fn regression_output(b: &mut Builder, value: &str) {
    b.node("Identity", "", &[value], vec![], Some("variable"));
    b.graph
        .output
        .push(value_info("variable", data_type::FLOAT, &[None, Some(1)]));
}

/// Trees: the ensemble, then the link.
fn trees(
    b: &mut Builder,
    artifact: &ModelArtifact,
    ensemble: &Ensemble,
    columns: &[String],
) -> ModelResult<()> {
    let x = b.node(
        "Concat",
        "",
        &refs(columns),
        vec![attr_int("axis", 1)],
        None,
    );
    let raw = tree_ensemble(b, ensemble, &x)?;
    let k = ensemble.n_outputs;
    let raw = if ensemble.combine == Combine::Sum && ensemble.init.iter().any(|v| *v != 0.0) {
        let init = b.constant(vec![k as i64], ensemble.init.clone());
        b.node("Add", "", &[&raw, &init], vec![], None)
    } else {
        raw
    };
    if ensemble.objective == Objective::Regression {
        regression_output(b, &raw);
        return Ok(());
    }
    let labels = class_labels(artifact)?;
    let probabilities = match (ensemble.objective, ensemble.combine) {
        (Objective::Binary, Combine::Sum) => binary_probabilities(b, artifact, &raw),
        (Objective::Binary, Combine::Mean) => {
            let lo = b.constant(vec![], vec![0.0]);
            let hi = b.constant(vec![], vec![1.0]);
            let p = b.node("Clip", "", &[&raw, &lo, &hi], vec![], None);
            both_classes(b, &p)
        }
        (_, Combine::Sum) => b.node(
            "Softmax",
            "",
            &[&raw],
            vec![attr_int("axis", 1)],
            Some("probabilities"),
        ),
        (_, Combine::Mean) => {
            let axes = b.constant_i64(vec![1], vec![1]);
            let sum = b.node(
                "ReduceSum",
                "",
                &[&raw, &axes],
                vec![attr_int("keepdims", 1)],
                None,
            );
            b.node("Div", "", &[&raw, &sum], vec![], Some("probabilities"))
        }
    };
    classifier_outputs(b, &probabilities, labels);
    Ok(())
}

/// The design of a linear model or k-means, `[N, width]` in double precision, as
/// `Design::row` computes it: standardised numbers (NULL = 0, the mean), one-hot categories.
fn design(b: &mut Builder, d: &Design, columns: &[String]) -> String {
    let zero = b.constant_f64(vec![], vec![0.0]);
    let mut parts = Vec::new();
    for (enc, col) in d.cols.iter().zip(columns) {
        match enc {
            ColumnEncoding::Scaled { mean, std } => {
                let x = b.cast(col, data_type::DOUBLE);
                let m = b.constant_f64(vec![], vec![*mean]);
                let s = b.constant_f64(vec![], vec![*std]);
                let centred = b.node("Sub", "", &[&x, &m], vec![], None);
                let z = b.node("Div", "", &[&centred, &s], vec![], None);
                let missing = b.node("IsNaN", "", &[&x], vec![], None);
                parts.push(b.node("Where", "", &[&missing, &zero, &z], vec![], None));
            }
            ColumnEncoding::OneHot { n } => {
                let codes = b.constant(vec![*n as i64], (0..*n).map(|c| c as f32).collect());
                let hit = b.node("Equal", "", &[col, &codes], vec![], None);
                parts.push(b.cast(&hit, data_type::DOUBLE));
            }
        }
    }
    b.node("Concat", "", &refs(&parts), vec![attr_int("axis", 1)], None)
}

/// Linear and logistic regression.
fn linear(
    b: &mut Builder,
    artifact: &ModelArtifact,
    model: &LinearModel,
    columns: &[String],
) -> ModelResult<()> {
    let x = design(b, &model.design, columns);
    let width = model.design.width();
    let k = model.weights.len();
    // Weights transposed to [width, k]; the intercepts (last entries) added after.
    let mut w = vec![0.0; width * k];
    for (o, weights) in model.weights.iter().enumerate() {
        for (j, v) in weights[..width].iter().enumerate() {
            w[j * k + o] = *v;
        }
    }
    let intercepts: Vec<f64> = model.weights.iter().map(|ws| ws[width]).collect();
    let w = b.constant_f64(vec![width as i64, k as i64], w);
    let c = b.constant_f64(vec![k as i64], intercepts);
    let product = b.node("MatMul", "", &[&x, &w], vec![], None);
    let z = b.node("Add", "", &[&product, &c], vec![], None);
    if !model.logistic {
        let value = b.cast(&z, data_type::FLOAT);
        regression_output(b, &value);
        return Ok(());
    }
    let labels = class_labels(artifact)?;
    let probabilities = if k == 1 {
        let logit = match &artifact.calibration {
            Some(cal) => {
                let a = b.constant_f64(vec![1], vec![cal.a]);
                let bias = b.constant_f64(vec![1], vec![cal.b]);
                let scaled = b.node("Mul", "", &[&z, &a], vec![], None);
                b.node("Add", "", &[&scaled, &bias], vec![], None)
            }
            None => z,
        };
        let p = b.node("Sigmoid", "", &[&logit], vec![], None);
        let p = b.cast(&p, data_type::FLOAT);
        both_classes(b, &p)
    } else {
        // One-vs-rest: each class's sigmoid, normalised to sum to 1.
        let p = b.node("Sigmoid", "", &[&z], vec![], None);
        let axes = b.constant_i64(vec![1], vec![1]);
        let sum = b.node(
            "ReduceSum",
            "",
            &[&p, &axes],
            vec![attr_int("keepdims", 1)],
            None,
        );
        let normalised = b.node("Div", "", &[&p, &sum], vec![], None);
        b.node(
            "Cast",
            "",
            &[&normalised],
            vec![attr_int("to", i64::from(data_type::FLOAT))],
            Some("probabilities"),
        )
    };
    classifier_outputs(b, &probabilities, labels);
    Ok(())
}

/// A perceptron: its input vector as `MlpModel` builds it (standardised numbers with NULL as
/// 0 and a missing indicator, then each category's embedding row, the last row for NULL and
/// unseen), the dense layers as `Gemm` + `Relu`, then the head.
fn mlp(
    b: &mut Builder,
    artifact: &ModelArtifact,
    model: &MlpModel,
    columns: &[String],
) -> ModelResult<()> {
    let weights = model.weights()?;
    let zero = b.constant(vec![], vec![0.0]);
    let mut numbers = Vec::new();
    let mut embedded = Vec::new();
    let mut tables = weights.embeddings.iter();
    for (input, col) in model.inputs.iter().zip(columns) {
        match input {
            InputColumn::Number { mean, std, missing } => {
                let m = b.constant(vec![], vec![*mean as f32]);
                let s = b.constant(vec![], vec![(1.0 / *std) as f32]);
                let centred = b.node("Sub", "", &[col, &m], vec![], None);
                let z = b.node("Mul", "", &[&centred, &s], vec![], None);
                let nan = b.node("IsNaN", "", &[col], vec![], None);
                numbers.push(b.node("Where", "", &[&nan, &zero, &z], vec![], None));
                if *missing {
                    numbers.push(b.cast(&nan, data_type::FLOAT));
                }
            }
            InputColumn::Category { n, dim } => {
                let (rows, table) = tables.next().ok_or_else(|| {
                    ModelError::Corrupt("network weights: an embedding is missing".into())
                })?;
                if *rows != n + 1 {
                    return Err(ModelError::Corrupt(
                        "network weights: an embedding has the wrong shape".into(),
                    ));
                }
                // Codes are -1 for NULL and unseen values: those take the last row.
                let unseen = b.constant(vec![], vec![*n as f32]);
                let below = b.node("Less", "", &[col, &zero], vec![], None);
                let code = b.node("Where", "", &[&below, &unseen, col], vec![], None);
                let code = b.cast(&code, data_type::INT64);
                let axis = b.constant_i64(vec![1], vec![1]);
                let code = b.node("Squeeze", "", &[&code, &axis], vec![], None);
                let table = b.constant(vec![(n + 1) as i64, *dim as i64], table.clone());
                embedded.push(b.node("Gather", "", &[&table, &code], vec![], None));
            }
        }
    }
    let parts: Vec<String> = numbers.into_iter().chain(embedded).collect();
    let mut h = b.node("Concat", "", &refs(&parts), vec![attr_int("axis", 1)], None);
    let last = weights.layers.len().saturating_sub(1);
    for (i, (out, fan_in, w, bias)) in weights.layers.iter().enumerate() {
        let w = b.constant(vec![*out as i64, *fan_in as i64], w.clone());
        let c = b.constant(vec![*out as i64], bias.clone());
        h = b.node("Gemm", "", &[&h, &w, &c], vec![attr_int("transB", 1)], None);
        if i < last {
            h = b.node("Relu", "", &[&h], vec![], None);
        }
    }
    match &model.head {
        Head::Value { mean, std } => {
            let s = b.constant(vec![], vec![*std as f32]);
            let m = b.constant(vec![], vec![*mean as f32]);
            let scaled = b.node("Mul", "", &[&h, &s], vec![], None);
            let value = b.node("Add", "", &[&scaled, &m], vec![], None);
            regression_output(b, &value);
        }
        Head::Logit => {
            let labels = class_labels(artifact)?;
            let probabilities = binary_probabilities(b, artifact, &h);
            classifier_outputs(b, &probabilities, labels);
        }
        Head::Softmax => {
            let labels = class_labels(artifact)?;
            let probabilities = b.node(
                "Softmax",
                "",
                &[&h],
                vec![attr_int("axis", 1)],
                Some("probabilities"),
            );
            classifier_outputs(b, &probabilities, labels);
        }
    }
    Ok(())
}

/// k-means: the nearest centroid's index as `label` (int64).
fn kmeans(b: &mut Builder, model: &KMeans, columns: &[String]) {
    let x = design(b, &model.design, columns);
    let width = model.design.width();
    let k = model.centroids.len();
    let centroids = b.constant_f64(
        vec![1, k as i64, width as i64],
        model.centroids.iter().flatten().copied().collect(),
    );
    let axis = b.constant_i64(vec![1], vec![1]);
    let rows = b.node("Unsqueeze", "", &[&x, &axis], vec![], None);
    let diff = b.node("Sub", "", &[&rows, &centroids], vec![], None);
    let squared = b.node("Mul", "", &[&diff, &diff], vec![], None);
    let last = b.constant_i64(vec![1], vec![2]);
    let distances = b.node(
        "ReduceSum",
        "",
        &[&squared, &last],
        vec![attr_int("keepdims", 0)],
        None,
    );
    b.node(
        "ArgMin",
        "",
        &[&distances],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
        Some("label"),
    );
    b.graph
        .output
        .push(value_info("label", data_type::INT64, &[None]));
}

/// One `TreeEnsemble` node summing every tree's leaf into its output (`[N, outputs]`).
fn tree_ensemble(b: &mut Builder, e: &Ensemble, x: &str) -> ModelResult<String> {
    let k = e.n_outputs.max(1);
    let per_output = (e.trees.len() / k).max(1) as f32;
    let scale = match e.combine {
        Combine::Sum => 1.0,
        Combine::Mean => 1.0 / per_output,
    };
    let mut roots = Vec::new();
    let (mut features, mut splits, mut modes) = (vec![], vec![], vec![]);
    let (mut true_ids, mut true_leafs, mut false_ids, mut false_leafs) =
        (vec![], vec![], vec![], vec![]);
    let (mut missing_true, mut members) = (vec![], vec![]);
    let (mut leaf_targets, mut leaf_weights) = (vec![], vec![]);
    for (i, tree) in e.trees.iter().enumerate() {
        let node_base = features.len() as i64;
        let leaf_base = leaf_weights.len() as i64;
        roots.push(node_base);
        for leaf in &tree.leaves {
            leaf_targets.push((i % k) as i64);
            leaf_weights.push(leaf * scale);
        }
        if tree.nodes.is_empty() {
            // A single leaf: a node whose both branches reach it.
            features.push(0);
            splits.push(0.0);
            modes.push(0);
            true_ids.push(leaf_base);
            true_leafs.push(1);
            false_ids.push(leaf_base);
            false_leafs.push(1);
            missing_true.push(1);
            continue;
        }
        let child = |c: i32| -> (i64, i64) {
            if c >= 0 {
                (node_base + i64::from(c), 0)
            } else {
                (leaf_base + i64::from(!c), 1)
            }
        };
        for node in &tree.nodes {
            features.push(i64::from(node.feature));
            if node.cat_set >= 0 {
                let set = tree
                    .cat_sets
                    .get(node.cat_set as usize)
                    .ok_or_else(|| ModelError::Corrupt("a categorical split has no set".into()))?;
                splits.push(0.0);
                modes.push(6); // BRANCH_MEMBER
                members.extend((0..=255u8).filter(|b| set_has(set, *b)).map(f32::from));
                members.push(f32::NAN);
                missing_true.push(0);
            } else {
                splits.push(node.threshold);
                modes.push(0); // BRANCH_LEQ
                missing_true.push(i64::from(node.missing_left));
            }
            let (t, tl) = child(node.left);
            let (f, fl) = child(node.right);
            true_ids.push(t);
            true_leafs.push(tl);
            false_ids.push(f);
            false_leafs.push(fl);
        }
    }
    let mut attributes = vec![
        attr_int("aggregate_function", 1), // SUM
        attr_int("post_transform", 0),     // NONE
        attr_int("n_targets", k as i64),
        attr_ints("tree_roots", roots),
        attr_ints("nodes_featureids", features),
        attr_tensor(
            "nodes_splits",
            floats_tensor(vec![splits.len() as i64], splits),
        ),
        attr_tensor(
            "nodes_modes",
            TensorProto {
                dims: vec![modes.len() as i64],
                data_type: data_type::UINT8,
                int32_data: modes,
                ..Default::default()
            },
        ),
        attr_ints("nodes_truenodeids", true_ids),
        attr_ints("nodes_trueleafs", true_leafs),
        attr_ints("nodes_falsenodeids", false_ids),
        attr_ints("nodes_falseleafs", false_leafs),
        attr_ints("nodes_missing_value_tracks_true", missing_true),
        attr_ints("leaf_targetids", leaf_targets),
        attr_tensor(
            "leaf_weights",
            floats_tensor(vec![leaf_weights.len() as i64], leaf_weights),
        ),
    ];
    if !members.is_empty() {
        attributes.push(attr_tensor(
            "membership_values",
            floats_tensor(vec![members.len() as i64], members),
        ));
    }
    Ok(b.node("TreeEnsemble", "ai.onnx.ml", &[x], attributes, None))
}
