//! Scripted protocol conformance suites.
//!
//! A suite is a set of JSON files of cases; each case is a list of steps
//! (connect a named client, send a frame, expect frames with matchers, call
//! the HTTP API, ...). [`run`] executes a suite against a live server and
//! reports one line per case. The format is documented in
//! `conformance/README.md`; the pieces are:
//! - [`suite`]: the file format as typed values, and loading;
//! - [`resolve`]: `${var}` substitution, templates, inline tokens;
//! - [`matcher`]: matching received JSON against patterns, with captures;
//! - [`runner`]: executing cases over WebSockets and HTTP (with the
//!   server's own client, [`crate::http_client`]).

pub mod matcher;
pub mod resolve;
pub mod runner;
pub mod suite;

pub use runner::{RunOptions, Summary, run};
