//! The pickle machine: operand decoding, the stack with its MARK groups, the memo, and one
//! arm per opcode. What a REDUCE or BINPERSID would construct is left to the torch module.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::opcodes::*;
use super::torch::{call, persistent_load};
use super::value::{DictObj, GlobalRef, ListObj, Seq, Value};

/// Where and why a pickle could not be interpreted.
pub(super) struct VmError {
    /// Byte offset of the offending opcode.
    pub(super) offset: usize,
    /// What was wrong, with the offset.
    pub(super) detail: String,
}

/// Python's unpickler reduced to what `torch.save` emits; it builds data, never calls code.
pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stacks saved by MARK, as in CPython; keeps a stray POP from corrupting marks.
    metastack: Vec<Vec<Value>>,
    /// Keyed rather than indexed so a huge memo index cannot force a huge allocation.
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            metastack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    /// Interprets the pickle up to STOP and returns the object it built.
    pub(super) fn run(mut self) -> Result<Value, VmError> {
        loop {
            let at = self.pos;
            let Some(&op) = self.data.get(at) else {
                return Err(VmError {
                    offset: at,
                    detail: format!(
                        "pickle ends at offset {at} without a STOP opcode (truncated data.pkl?)"
                    ),
                });
            };
            self.pos = at + 1;
            match self.step(op) {
                Ok(Some(result)) => return Ok(result),
                Ok(None) => {}
                Err(what) => {
                    let hint = if what.starts_with("unsupported pickle opcode") {
                        "; expected one of the protocol-2 opcodes that torch.save writes"
                    } else {
                        ""
                    };
                    return Err(VmError {
                        offset: at,
                        detail: format!("{what} at offset {at}{hint}"),
                    });
                }
            }
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: operand of {n} bytes runs past the end ({} bytes left)",
                    self.data.len().saturating_sub(self.pos)
                )
            })?;
        let slice = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let b = self.bytes(N)?;
        <[u8; N]>::try_from(b).map_err(|_| "internal operand size mismatch".to_string())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32_le(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len_u32(&mut self) -> Result<usize, String> {
        usize::try_from(self.u32_le()?).map_err(|_| "length does not fit in memory".to_string())
    }

    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.array()?))
            .map_err(|_| "length does not fit in memory".to_string())
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| "GLOBAL operand has no terminating newline".to_string())?;
        let text = self.bytes(n)?;
        self.pos += 1;
        std::str::from_utf8(text).map_err(|_| "GLOBAL operand is not UTF-8".to_string())
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow (an opcode needs more operands)".to_string())
    }

    fn top(&self) -> Result<&Value, String> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow (an opcode needs an object)".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let saved = self
            .metastack
            .pop()
            .ok_or_else(|| "no MARK before an opcode that needs one".to_string())?;
        Ok(std::mem::replace(&mut self.stack, saved))
    }

    fn str_value(bytes: &[u8]) -> Result<Value, String> {
        std::str::from_utf8(bytes)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| "string is not valid UTF-8".to_string())
    }

    /// Python 2 `str` pickles: usually ASCII names; Latin-1 keeps any byte decodable.
    fn legacy_str_value(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(s) => Value::Str(Rc::from(s)),
            Err(_) => Value::Str(
                bytes
                    .iter()
                    .map(|&b| char::from(b))
                    .collect::<String>()
                    .into(),
            ),
        }
    }

    fn long(bytes: &[u8]) -> Result<Value, String> {
        // Two's complement, little-endian; values beyond i64 cannot be sizes or offsets.
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        if bytes.len() > 8
            && bytes
                .get(8..)
                .is_some_and(|hi| hi.iter().any(|&b| b != fill))
        {
            return Err(format!(
                "integer of {} bytes does not fit in 64 bits",
                bytes.len()
            ));
        }
        let mut buf = [fill; 8];
        for (dst, &src) in buf.iter_mut().zip(bytes) {
            *dst = src;
        }
        let v = i64::from_le_bytes(buf);
        if (v < 0) != negative {
            return Err(format!(
                "integer of {} bytes does not fit in 64 bits",
                bytes.len()
            ));
        }
        Ok(Value::Int(v))
    }

    fn step(&mut self, op: u8) -> Result<Option<Value>, String> {
        match op {
            PROTO => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} is newer than 5"));
                }
            }
            // Framing only matters to streaming readers.
            FRAME => {
                self.bytes(8)?;
            }
            STOP => return self.pop().map(Some),
            MARK => {
                let current = std::mem::take(&mut self.stack);
                self.metastack.push(current);
            }
            POP => {
                if self.stack.pop().is_none() {
                    self.pop_mark()?;
                }
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let v = self.top()?.clone();
                self.push(v);
            }
            EMPTY_DICT => self.push(Value::Dict(Rc::default())),
            EMPTY_LIST => self.push(Value::List(Rc::new(ListObj(RefCell::new(Vec::new()))))),
            EMPTY_TUPLE => self.push(Value::Tuple(Rc::new(Seq(Vec::new())))),
            TUPLE => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(Seq(items))));
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = match op {
                    TUPLE1 => 1,
                    TUPLE2 => 2,
                    _ => 3,
                };
                let split = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .ok_or_else(|| format!("TUPLE{n} needs {n} items on the stack"))?;
                let items = self.stack.split_off(split);
                self.push(Value::Tuple(Rc::new(Seq(items))));
            }
            BINUNICODE => {
                let n = self.len_u32()?;
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            SHORT_BINUNICODE => {
                let n = usize::from(self.u8()?);
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            BINUNICODE8 => {
                let n = self.len_u64()?;
                let v = Self::str_value(self.bytes(n)?)?;
                self.push(v);
            }
            BINSTRING => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| format!("negative string length {n}"))?;
                let v = Self::legacy_str_value(self.bytes(n)?);
                self.push(v);
            }
            SHORT_BINSTRING => {
                let n = usize::from(self.u8()?);
                let v = Self::legacy_str_value(self.bytes(n)?);
                self.push(v);
            }
            BINBYTES => {
                let n = self.len_u32()?;
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            SHORT_BINBYTES => {
                let n = usize::from(self.u8()?);
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            BINBYTES8 => {
                let n = self.len_u64()?;
                let v = Value::Bytes(Rc::from(self.bytes(n)?));
                self.push(v);
            }
            BININT => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)));
            }
            BININT1 => {
                let v = self.u8()?;
                self.push(Value::Int(i64::from(v)));
            }
            BININT2 => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)));
            }
            LONG1 => {
                let n = usize::from(self.u8()?);
                let v = Self::long(self.bytes(n)?)?;
                self.push(v);
            }
            LONG4 => {
                let n = i32::from_le_bytes(self.array()?);
                let n = usize::try_from(n).map_err(|_| format!("negative integer length {n}"))?;
                let v = Self::long(self.bytes(n)?)?;
                self.push(v);
            }
            NONE => self.push(Value::None),
            NEWTRUE => self.push(Value::Bool(true)),
            NEWFALSE => self.push(Value::Bool(false)),
            BINFLOAT => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v));
            }
            GLOBAL => {
                let module = self.line()?.to_string();
                let name = self.line()?.to_string();
                self.push(Value::Global(Rc::new(GlobalRef { module, name })));
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err(format!(
                        "STACK_GLOBAL needs two strings, found {} and {}",
                        module.kind(),
                        name.kind()
                    ));
                };
                self.push(Value::Global(Rc::new(GlobalRef {
                    module: module.to_string(),
                    name: name.to_string(),
                })));
            }
            BINPERSID => {
                let pid = self.pop()?;
                let v = persistent_load(&pid)?;
                self.push(v);
            }
            // Both build an object from a callable and an argument tuple.
            REDUCE | NEWOBJ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = call(&callable, &args)?;
                self.push(v);
            }
            BUILD => {
                let _state = self.pop()?;
                match self.top()? {
                    // OrderedDict `_metadata`, parameter state, plain object attributes: none
                    // of them changes tensor values.
                    Value::Dict(_) | Value::Tensor(_) | Value::Object(_) => {}
                    other => return Err(format!("BUILD on {}, expected an object", other.kind())),
                }
            }
            SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_on_top()?.0.borrow_mut().insert(key, value);
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(format!(
                        "SETITEMS with an odd number of items ({})",
                        items.len()
                    ));
                }
                let dict = self.dict_on_top()?;
                let mut inner = dict.0.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    inner.insert(k, v);
                }
            }
            APPEND => {
                let value = self.pop()?;
                self.list_on_top()?.0.borrow_mut().push(value);
            }
            APPENDS => {
                let mut items = self.pop_mark()?;
                self.list_on_top()?.0.borrow_mut().append(&mut items);
            }
            BINPUT => {
                let key = u32::from(self.u8()?);
                self.memoize(key)?;
            }
            LONG_BINPUT => {
                let key = self.u32_le()?;
                self.memoize(key)?;
            }
            MEMOIZE => {
                let key = u32::try_from(self.memo.len())
                    .map_err(|_| "memo has more than 2^32 entries".to_string())?;
                self.memoize(key)?;
            }
            BINGET => {
                let key = u32::from(self.u8()?);
                self.recall(key)?;
            }
            LONG_BINGET => {
                let key = self.u32_le()?;
                self.recall(key)?;
            }
            _ => {
                return Err(format!("unsupported pickle opcode 0x{op:02x}"));
            }
        }
        Ok(None)
    }

    fn memoize(&mut self, key: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn recall(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} read before it was stored"))?;
        self.push(v);
        Ok(())
    }

    fn dict_on_top(&self) -> Result<Rc<DictObj>, String> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => Err(format!("SETITEM(S) on {}, expected a dict", other.kind())),
        }
    }

    fn list_on_top(&self) -> Result<Rc<ListObj>, String> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => Err(format!("APPEND(S) on {}, expected a list", other.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pickle: &[u8]) -> Result<Value, VmError> {
        Machine::new(pickle).run()
    }

    #[test]
    fn long1_decodes_sign() {
        let Ok(Value::Int(v)) = run(&[0x8a, 2, 0xff, 0x7f, b'.']) else {
            panic!("expected int");
        };
        assert_eq!(v, 0x7fff);
        let Ok(Value::Int(v)) = run(&[0x8a, 1, 0xff, b'.']) else {
            panic!("expected int");
        };
        assert_eq!(v, -1);
        assert!(run(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'.']).is_err());
    }

    #[test]
    fn bad_operands_are_errors() {
        for p in [
            &b"X\xff\xff\xff\xff"[..],
            b"t.",
            b"h\x05.",
            b"q",
            b"\x85.",
            b"cfoo",
            b"}K\x01u.",
        ] {
            assert!(run(p).is_err(), "{p:?}");
        }
    }
}
