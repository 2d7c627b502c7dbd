//! What torch's pickles construct, evaluated as data: storages named by persistent ids,
//! tensors rebuilt as views of them, and the dicts that hold them. Anything else torch
//! would construct is refused; other classes become opaque objects.

use std::rc::Rc;

use super::value::{DictObj, Value};

/// A persistent id `('storage', storage_type, key, location, numel)`.
pub(super) struct StorageRef {
    pub(super) storage_type: String,
    pub(super) key: String,
    pub(super) numel: u64,
}

/// A strided view of a storage, not yet read from the archive.
pub(super) struct TensorRef {
    pub(super) storage: Rc<StorageRef>,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// torch.save's persistent id for a storage: `('storage', type, key, location, numel)`.
pub(super) fn persistent_load(pid: &Value) -> Result<Value, String> {
    let expected = "expected ('storage', storage_type, key, location, numel)";
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is {}; {expected}", pid.kind()));
    };
    let [tag, storage_type, key, _location, numel] = t.0.as_slice() else {
        return Err(format!("persistent id is {}; {expected}", pid.kind()));
    };
    if !matches!(tag, Value::Str(s) if &**s == "storage") {
        return Err(format!("persistent id tag is {}; {expected}", tag.kind()));
    }
    let storage_type = match storage_type {
        Value::Global(g) => format!("{}.{}", g.module, g.name),
        other => return Err(format!("storage type is {}; {expected}", other.kind())),
    };
    let key = match key {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is {}; {expected}", other.kind())),
    };
    if key.is_empty() || key.contains('/') || key.contains("..") {
        return Err(format!("storage key '{key}' is not a plain entry name"));
    }
    let numel = match numel {
        Value::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("storage element count {n} is negative"))?
        }
        other => {
            return Err(format!(
                "storage element count is {}; {expected}",
                other.kind()
            ));
        }
    };
    Ok(Value::Storage(Rc::new(StorageRef {
        storage_type,
        key,
        numel,
    })))
}

/// REDUCE / NEWOBJ: the constructors a state dict needs, evaluated as data.
pub(super) fn call(callable: &Value, args: &Value) -> Result<Value, String> {
    let (mut callable, mut args) = (callable.clone(), args.clone());
    // A loop, not recursion: a pickle can nest subclass wrappers arbitrarily deep.
    loop {
        let Value::Global(g) = &callable else {
            return Err(format!("cannot call {}", callable.kind()));
        };
        let Value::Tuple(tuple) = &args else {
            return Err(format!(
                "arguments to {}.{} are {}, expected a tuple",
                g.module,
                g.name,
                args.kind()
            ));
        };
        let items = tuple.0.as_slice();
        let inner = match (g.module.as_str(), g.name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") => return ordered_dict(items),
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                return rebuild_tensor(items);
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => {
                return match items.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    Some(other) => Err(format!(
                        "{}: parameter data is {}, expected a tensor",
                        g.name,
                        other.kind()
                    )),
                    None => Err(format!("{} called without arguments", g.name)),
                };
            }
            // Tensor subclasses: (func, new_type, args, state); the subclass does not matter.
            ("torch._tensor", "_rebuild_from_type_v2") => match items {
                [func, _new_type, inner_args, ..] => (func.clone(), inner_args.clone()),
                _ => {
                    return Err("_rebuild_from_type_v2 needs (func, type, args, state)".to_string());
                }
            },
            (module, name) if module == "torch" || module.starts_with("torch.") => {
                return Err(format!(
                    "unsupported torch constructor '{module}.{name}'; expected dense tensors \
                     rebuilt by torch._utils._rebuild_tensor_v2 (quantized, sparse and meta \
                     tensors are not read)"
                ));
            }
            (module, name) => {
                return Ok(Value::Object(Rc::from(format!("{module}.{name}").as_str())));
            }
        };
        (callable, args) = inner;
    }
}

fn ordered_dict(args: &[Value]) -> Result<Value, String> {
    let dict = Rc::new(DictObj::default());
    match args {
        [] => {}
        [Value::List(_) | Value::Tuple(_)] => {
            let pairs = match args.first() {
                Some(Value::List(l)) => l.0.borrow().clone(),
                Some(Value::Tuple(t)) => t.0.clone(),
                _ => Vec::new(),
            };
            let mut inner = dict.0.borrow_mut();
            for pair in pairs {
                match &pair {
                    Value::Tuple(kv) => match kv.0.as_slice() {
                        [k, v] => inner.insert(k.clone(), v.clone()),
                        _ => return Err("OrderedDict item is not a (key, value) pair".to_string()),
                    },
                    other => {
                        return Err(format!(
                            "OrderedDict item is {}, expected a pair",
                            other.kind()
                        ));
                    }
                }
            }
        }
        _ => return Err("OrderedDict called with unexpected arguments".to_string()),
    }
    Ok(Value::Dict(dict))
}

fn int_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = match v {
        Value::Tuple(t) => t.0.clone(),
        Value::List(l) => l.0.borrow().clone(),
        other => {
            return Err(format!(
                "tensor {what} is {}, expected a tuple of ints",
                other.kind()
            ));
        }
    };
    items
        .iter()
        .map(|item| match item {
            Value::Int(i) => {
                usize::try_from(*i).map_err(|_| format!("tensor {what} has negative entry {i}"))
            }
            other => Err(format!(
                "tensor {what} holds {}, expected ints",
                other.kind()
            )),
        })
        .collect()
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta])`.
fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let [storage, offset, size, stride, ..] = args else {
        return Err(format!(
            "_rebuild_tensor_v2 got {} arguments, expected (storage, storage_offset, size, \
             stride, ...)",
            args.len()
        ));
    };
    let Value::Storage(storage) = storage else {
        return Err(format!(
            "_rebuild_tensor_v2 storage argument is {}, expected a storage",
            storage.kind()
        ));
    };
    let offset = match offset {
        Value::Int(i) => {
            usize::try_from(*i).map_err(|_| format!("tensor storage offset {i} is negative"))?
        }
        other => {
            return Err(format!(
                "tensor storage offset is {}, expected an int",
                other.kind()
            ));
        }
    };
    let shape = int_tuple(size, "size")?;
    let stride = int_tuple(stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "tensor size has {} dimensions but stride has {}",
            shape.len(),
            stride.len()
        ));
    }
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::machine::Machine;

    #[test]
    fn deep_subclass_wrappers_do_not_recurse() {
        // memo 0 = wrapper; args_0 = (); args_{k+1} = (wrapper, None, args_k, None);
        // finally wrapper(*args_n), which unwraps down to wrapper(*()).
        let mut p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nq\x000)".to_vec();
        for _ in 0..200_000 {
            p.extend_from_slice(b"q\x010(h\x00Nh\x01Nt");
        }
        p.extend_from_slice(b"q\x010h\x00h\x01R.");
        let err = Machine::new(&p)
            .run()
            .err()
            .map(|e| e.detail)
            .unwrap_or_default();
        assert!(err.contains("needs (func, type, args, state)"), "{err}");
    }
}
