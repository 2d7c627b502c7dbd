//! The pickle opcodes `torch.save` writes (protocol 2, plus the protocol 3 to 5 ones a newer
//! pickler may emit), named as in CPython's `pickletools`.

/// Protocol version header.
pub(super) const PROTO: u8 = 0x80;
/// Frame length (protocol 4); only streaming readers care.
pub(super) const FRAME: u8 = 0x95;
/// End of the pickle: the top of the stack is the result.
pub(super) const STOP: u8 = b'.';
/// Starts a group of items for the next TUPLE, SETITEMS or APPENDS.
pub(super) const MARK: u8 = b'(';
/// Drops the top of the stack.
pub(super) const POP: u8 = b'0';
/// Drops everything back to the last MARK.
pub(super) const POP_MARK: u8 = b'1';
/// Duplicates the top of the stack.
pub(super) const DUP: u8 = b'2';
/// Pushes `{}`.
pub(super) const EMPTY_DICT: u8 = b'}';
/// Pushes `[]`.
pub(super) const EMPTY_LIST: u8 = b']';
/// Pushes `()`.
pub(super) const EMPTY_TUPLE: u8 = b')';
/// Builds a tuple from the items since the last MARK.
pub(super) const TUPLE: u8 = b't';
/// Builds a tuple from the top item.
pub(super) const TUPLE1: u8 = 0x85;
/// Builds a tuple from the top two items.
pub(super) const TUPLE2: u8 = 0x86;
/// Builds a tuple from the top three items.
pub(super) const TUPLE3: u8 = 0x87;
/// UTF-8 string, u32 length.
pub(super) const BINUNICODE: u8 = b'X';
/// UTF-8 string, u8 length.
pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
/// UTF-8 string, u64 length.
pub(super) const BINUNICODE8: u8 = 0x8d;
/// Python 2 string, i32 length.
pub(super) const BINSTRING: u8 = b'T';
/// Python 2 string, u8 length.
pub(super) const SHORT_BINSTRING: u8 = b'U';
/// Bytes, u32 length.
pub(super) const BINBYTES: u8 = b'B';
/// Bytes, u8 length.
pub(super) const SHORT_BINBYTES: u8 = b'C';
/// Bytes, u64 length.
pub(super) const BINBYTES8: u8 = 0x8e;
/// Signed 32-bit integer.
pub(super) const BININT: u8 = b'J';
/// Unsigned 8-bit integer.
pub(super) const BININT1: u8 = b'K';
/// Unsigned 16-bit integer.
pub(super) const BININT2: u8 = b'M';
/// Two's-complement integer, u8 length.
pub(super) const LONG1: u8 = 0x8a;
/// Two's-complement integer, i32 length.
pub(super) const LONG4: u8 = 0x8b;
/// Pushes `None`.
pub(super) const NONE: u8 = b'N';
/// Pushes `True`.
pub(super) const NEWTRUE: u8 = 0x88;
/// Pushes `False`.
pub(super) const NEWFALSE: u8 = 0x89;
/// Big-endian f64.
pub(super) const BINFLOAT: u8 = b'G';
/// A class or function named by two newline-terminated operands.
pub(super) const GLOBAL: u8 = b'c';
/// A class or function named by the two strings on top of the stack.
pub(super) const STACK_GLOBAL: u8 = 0x93;
/// Resolves the persistent id on top of the stack (torch: a storage).
pub(super) const BINPERSID: u8 = b'Q';
/// Calls a callable with an argument tuple.
pub(super) const REDUCE: u8 = b'R';
/// `cls.__new__(cls, *args)`.
pub(super) const NEWOBJ: u8 = 0x81;
/// Sets an object's state.
pub(super) const BUILD: u8 = b'b';
/// Adds one key and value to the dict below them.
pub(super) const SETITEM: u8 = b's';
/// Adds the pairs since the last MARK to the dict below them.
pub(super) const SETITEMS: u8 = b'u';
/// Appends one item to the list below it.
pub(super) const APPEND: u8 = b'a';
/// Appends the items since the last MARK to the list below them.
pub(super) const APPENDS: u8 = b'e';
/// Stores the top of the stack in the memo, u8 key.
pub(super) const BINPUT: u8 = b'q';
/// Stores the top of the stack in the memo, u32 key.
pub(super) const LONG_BINPUT: u8 = b'r';
/// Stores the top of the stack in the memo under the next free key.
pub(super) const MEMOIZE: u8 = 0x94;
/// Pushes a memo entry, u8 key.
pub(super) const BINGET: u8 = b'h';
/// Pushes a memo entry, u32 key.
pub(super) const LONG_BINGET: u8 = b'j';
