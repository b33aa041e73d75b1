//! Small network tools used by the demo, the tests and operators: an echo server and a
//! connection prober.

pub mod echo;
pub mod probe;
