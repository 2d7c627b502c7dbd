//! The values a pickle builds: plain data, shared containers that later opcodes may still
//! fill, and the torch objects a state dict holds, kept as references until they are read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::torch::{StorageRef, TensorRef};

/// A pickled value. Lists and dicts are shared and mutable because pickle's memo lets later
/// opcodes fill an object that was stored earlier.
#[derive(Clone)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Seq>),
    List(Rc<ListObj>),
    Dict(Rc<DictObj>),
    /// A class or function named by GLOBAL; only its name is kept.
    Global(Rc<GlobalRef>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// The result of calling a non-torch class (e.g. `argparse.Namespace`): kept opaque so
    /// that it can be skipped like any other non-tensor entry.
    Object(Rc<str>),
}

impl Value {
    /// A short description for messages; never recurses, so cycles are harmless.
    pub(super) fn kind(&self) -> String {
        match self {
            Self::None => "None".to_string(),
            Self::Bool(b) => format!("the bool {}", if *b { "True" } else { "False" }),
            Self::Int(i) => format!("the int {i}"),
            Self::Float(f) => format!("the float {f}"),
            Self::Str(_) => "a string".to_string(),
            Self::Bytes(b) => format!("{} bytes", b.len()),
            Self::Tuple(t) => format!("a tuple of {}", t.0.len()),
            Self::List(_) => "a list".to_string(),
            Self::Dict(_) => "a dict".to_string(),
            Self::Global(g) => format!("the class/function '{}.{}'", g.module, g.name),
            Self::Storage(_) => "a storage".to_string(),
            Self::Tensor(_) => "a tensor".to_string(),
            Self::Object(name) => format!("a '{name}' object"),
        }
    }
}

pub(super) struct Seq(pub(super) Vec<Value>);

pub(super) struct ListObj(pub(super) RefCell<Vec<Value>>);

#[derive(Default)]
pub(super) struct DictObj(pub(super) RefCell<DictInner>);

#[derive(Default)]
pub(super) struct DictInner {
    pub(super) entries: Vec<(Value, Value)>,
    /// Lets SETITEM replace an existing string key without a linear scan.
    by_str: HashMap<Rc<str>, usize>,
}

impl DictInner {
    pub(super) fn insert(&mut self, key: Value, value: Value) {
        if let Value::Str(s) = &key {
            if let Some(slot) = self.by_str.get(s).and_then(|&i| self.entries.get_mut(i)) {
                slot.1 = value;
                return;
            }
            self.by_str.insert(s.clone(), self.entries.len());
        }
        self.entries.push((key, value));
    }
}

// A pickle can nest containers a million deep in a million bytes; the default recursive drop
// would overflow the stack, so containers hand their children to an explicit work list.
impl Drop for Seq {
    fn drop(&mut self) {
        release(std::mem::take(&mut self.0));
    }
}

impl Drop for ListObj {
    fn drop(&mut self) {
        release(std::mem::take(self.0.get_mut()));
    }
}

impl Drop for DictObj {
    fn drop(&mut self) {
        let inner = self.0.get_mut();
        let mut pending = Vec::with_capacity(inner.entries.len() * 2);
        for (k, v) in inner.entries.drain(..) {
            pending.push(k);
            pending.push(v);
        }
        release(pending);
    }
}

fn release(mut pending: Vec<Value>) {
    while let Some(value) = pending.pop() {
        match value {
            Value::Tuple(rc) => {
                if let Ok(mut seq) = Rc::try_unwrap(rc) {
                    pending.append(&mut seq.0);
                }
            }
            Value::List(rc) => {
                if let Ok(mut list) = Rc::try_unwrap(rc) {
                    pending.append(list.0.get_mut());
                }
            }
            Value::Dict(rc) => {
                if let Ok(mut dict) = Rc::try_unwrap(rc) {
                    for (k, v) in dict.0.get_mut().entries.drain(..) {
                        pending.push(k);
                        pending.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A class or function as GLOBAL names it.
pub(super) struct GlobalRef {
    pub(super) module: String,
    pub(super) name: String,
}

#[cfg(test)]
mod tests {
    use super::super::machine::Machine;
    use super::*;

    #[test]
    fn deep_nesting_drops_without_overflow() {
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        assert!(matches!(Machine::new(&p).run(), Ok(Value::Tuple(_))));
    }
}
