//! What the .pth reader tests share.

use repopt_models::pth::{PthError, read_pth_bytes};

/// The error reading `bytes` gives, which must name `origin`.
pub fn expect_err(bytes: &[u8], origin: &str) -> PthError {
    match read_pth_bytes(bytes, origin) {
        Ok(t) => panic!("{origin}: expected an error, read {} tensors", t.len()),
        Err(e) => {
            assert!(e.to_string().contains(origin), "message lacks origin: {e}");
            e
        }
    }
}
