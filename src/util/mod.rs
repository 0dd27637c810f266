//! Small shared helpers: stderr logger, time formatting, spill buffers,
//! signal delivery to event loops.

pub mod allow;
pub mod intmap;
pub mod linelog;
pub mod logger;
pub mod net;
#[cfg(feature = "testing")]
pub mod procinfo;
pub mod ratelog;
#[cfg(any(test, feature = "testing"))]
pub mod rng;
pub mod signals;
pub mod spill;
pub mod time;
pub mod wbuf;
