//! Value parsers built on [`repopt::models::domain`]: a flag outside its domain is refused
//! while the command line is parsed, before an adapter is opened or a file read, in the
//! words its configuration key is refused in (`--momentum must be in [0, 1), got 1.5`).

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};
use repopt::models::domain::{Bounded, Domain, non_empty};

/// How messages name `arg`: `--flag` (and its environment variable, which the value may
/// have come from), or a positional argument's value name.
fn name_of(arg: Option<&Arg>) -> String {
    let Some(arg) = arg else {
        return "the value".into();
    };
    if let Some(long) = arg.get_long() {
        return match arg.get_env() {
            Some(env) => format!("--{long} (or {})", env.to_string_lossy()),
            None => format!("--{long}"),
        };
    }
    arg.get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase())
}

fn refuse(cmd: &Command, message: String) -> clap::Error {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).with_cmd(cmd)
}

/// A number within a [`Domain`]: `#[arg(long, value_parser = InRange(domain::MOMENTUM))]`.
#[derive(Clone, Copy)]
pub struct InRange<T>(pub Domain<T>);

impl<T: Bounded + Send + Sync + 'static> TypedValueParser for InRange<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        self.0
            .parse(&name_of(arg), &value.to_string_lossy())
            .map_err(|m| refuse(cmd, m))
    }
}

/// A path that is not empty.
#[derive(Clone, Copy)]
pub struct NonEmptyPath;

impl TypedValueParser for NonEmptyPath {
    type Value = PathBuf;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<PathBuf, clap::Error> {
        non_empty(&name_of(arg), "path", &value.to_string_lossy())
            .map(|()| PathBuf::from(value))
            .map_err(|m| refuse(cmd, m))
    }
}

/// A name (an adapter, a preset) that is not empty.
#[derive(Clone, Copy)]
pub struct NonEmptyName;

impl TypedValueParser for NonEmptyName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_string_lossy();
        non_empty(&name_of(arg), "name", &text)
            .map(|()| text.into_owned())
            .map_err(|m| refuse(cmd, m))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use repopt::models::domain;

    use super::*;

    #[derive(Parser, Debug)]
    struct Flags {
        #[arg(long, value_parser = InRange(domain::MOMENTUM))]
        momentum: Option<f32>,
        #[arg(long, value_delimiter = ',', value_parser = InRange(domain::NUM_BLOCKS))]
        num_blocks: Option<Vec<usize>>,
        #[arg(value_parser = NonEmptyPath)]
        file: Option<PathBuf>,
    }

    fn error(args: &[&str]) -> String {
        let argv = std::iter::once("repopt").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap_err().to_string()
    }

    #[test]
    fn flags_out_of_their_domain_are_named_with_the_range() {
        assert!(error(&["--momentum", "2"]).contains("--momentum must be in [0, 1), got 2"));
        assert!(
            error(&["--num-blocks", "1,0,1,1"]).contains("--num-blocks must be in [1, 128], got 0")
        );
        assert!(error(&[""]).contains("FILE must be a non-empty path, got ''"));
        let ok = Flags::try_parse_from(["repopt", "--momentum", "0.5", "--num-blocks", "1,2,2,1"])
            .unwrap();
        assert_eq!(
            (ok.momentum, ok.num_blocks),
            (Some(0.5), Some(vec![1, 2, 2, 1]))
        );
    }
}
