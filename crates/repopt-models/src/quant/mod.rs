//! INT8 quantization of deploy models: calibrators for activation ranges, and the weight
//! statistics behind the paper's quantization claim (Section 4.4, Appendix C).

pub mod calibrate;
pub mod network;
pub mod stats;
