//! Unit tests of the shipper: tailing real temp-dir files, rotation racing writes, checkpoints
//! and resume, the retry buffer bound, offsets per source.

use super::*;
