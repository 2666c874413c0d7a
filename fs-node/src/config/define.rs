//! The `settings!` macro: one definition per setting expands into the [`Config`] field, the
//! [`RawConfig`] (TOML) field, the [`Args`] flag with its environment variable and `--help`
//! text, the merge of two sources ([`RawConfig::overridden_by`]), the step that turns the flags
//! into overrides ([`Args::overrides`]), the validation step of [`Config::from_raw`], and the
//! row of [`SETTINGS`]. The module doc of [`crate::config`] shows an entry.
//!
//! [`Config`]: super::Config
//! [`RawConfig`]: super::RawConfig
//! [`RawConfig::overridden_by`]: super::RawConfig::overridden_by
//! [`Args`]: super::Args
//! [`Args::overrides`]: super::Args::overrides
//! [`Config::from_raw`]: super::Config::from_raw
//! [`SETTINGS`]: super::SETTINGS

use super::ConfigError;

/// What a setting is when no source gives it.
pub(super) enum Absent<T> {
    /// Refused as missing, with what to set.
    Required(&'static str),
    /// This value, shown in `--help`.
    Default(T),
    /// This value ("none", "empty"), not shown.
    Unset(T),
}

pub(super) fn required<T>(fix: &'static str) -> Absent<T> {
    Absent::Required(fix)
}

pub(super) fn default<T>(value: T) -> Absent<T> {
    Absent::Default(value)
}

pub(super) fn unset<T>(value: T) -> Absent<T> {
    Absent::Unset(value)
}

/// The setting's value: the given one through `parse`, else what `absent` says.
pub(super) fn resolve<R, T>(
    setting: &'static str,
    given: Option<R>,
    absent: Absent<T>,
    parse: fn(&'static str, R) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    match (given, absent) {
        (Some(value), _) => parse(setting, value),
        (None, Absent::Required(fix)) => Err(ConfigError::Missing { setting, fix }),
        (None, Absent::Default(value) | Absent::Unset(value)) => Ok(value),
    }
}

/// A flag's `--help` line: the setting's doc, then its default or "required".
pub(super) fn help_text<T: std::fmt::Debug>(doc: &[&str], absent: Absent<T>) -> String {
    let doc = doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ");
    let doc = doc.trim_end_matches('.');
    match absent {
        Absent::Required(_) => format!("{doc} (required)"),
        Absent::Default(value) => format!("{doc} [default: {value:?}]"),
        Absent::Unset(_) => doc.to_string(),
    }
}

/// One row of [`SETTINGS`](super::SETTINGS): a setting's names in each source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key, the [`Config`](super::Config) field and the name errors give.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
}

impl Setting {
    /// The command-line flag, with its dashes (as clap spells it).
    pub fn flag(&self) -> String {
        let command = <super::Args as clap::CommandFactory>::command();
        let arg = command.get_arguments().find(|arg| arg.get_id() == self.key);
        let long = arg.and_then(|arg| arg.get_long()).expect("every setting has a long flag");
        format!("--{long}")
    }
}

/// Expands the settings table; see the module doc.
macro_rules! settings {
    (@from_flag $value:expr) => { check::from_flag(&$value) };
    (@from_flag $value:expr, $from:path) => { $from(&$value) };
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $ty:ty {
            toml: $raw:ty,
            flag: $flag_ty:ty $(as $long:literal)? $(, split $delim:literal)? $(, from $from:path)?;
            env: $env:literal,
            absent: $absent:expr,
            parse: $parse:path,
            $(check: $check:path,)?
            $(rule: $rule:expr,)?
            $(derive {
                $(#[doc = $derived_doc:literal])*
                $derived:ident: $derived_ty:ty = $derive:expr
            })?
        }
    )*) => {
        /// The validated configuration `shoal-fs` runs with.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                pub $key: $ty,
                $(
                    $(#[doc = $derived_doc])*
                    pub $derived: $derived_ty,
                )?
            )*
        }

        /// Every setting as written in a TOML file or given as an override; `None` means "not
        /// given here". Unknown keys are refused by name.
        #[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
        #[serde(deny_unknown_fields)]
        pub struct RawConfig {
            $(
                $(#[doc = $doc])*
                pub $key: Option<$raw>,
            )*
        }

        /// `shoal-fs` flags. Each also reads the `SHOAL_*` environment variable named in its
        /// help; a flag wins over its variable, both win over the file.
        #[derive(clap::Parser, Clone, Debug, Default, PartialEq, Eq)]
        #[command(name = "shoal-fs", version, about = "Shoal file-server node")]
        pub struct Args {
            /// TOML configuration file.
            #[arg(long, env = "SHOAL_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                #[arg(
                    long $(= $long)?,
                    env = $env,
                    help = define::help_text::<$ty>(&[$($doc),*], $absent)
                    $(, value_delimiter = $delim)?
                )]
                pub $key: $flag_ty,
            )*
        }

        /// Every setting's names, in the order they are validated.
        pub const SETTINGS: &[Setting] = &[
            $(Setting { key: stringify!($key), env: $env },)*
        ];

        impl RawConfig {
            /// `self` with every setting that `over` gives replaced by `over`'s.
            pub fn overridden_by(self, over: RawConfig) -> RawConfig {
                RawConfig { $($key: over.$key.or(self.$key),)* }
            }
        }

        impl Args {
            /// The settings these flags give, as overrides. `--member` values must be
            /// `id=ip:port`.
            pub fn overrides(&self) -> Result<RawConfig, ConfigError> {
                Ok(RawConfig { $($key: settings!(@from_flag self.$key $(, $from)?)?,)* })
            }
        }

        impl Config {
            /// Fills defaults into `raw` and validates it, setting by setting in the table's
            /// order (the first refusal is reported). Reads the cluster key file.
            pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
                $(
                    let $key: $ty = define::resolve(stringify!($key), raw.$key, $absent, $parse)?;
                    $($check(stringify!($key), &$key)?;)?
                    $($rule?;)?
                    $(let $derived: $derived_ty = $derive?;)?
                )*
                Ok(Config { $($key, $($derived,)?)* })
            }
        }
    };
}
