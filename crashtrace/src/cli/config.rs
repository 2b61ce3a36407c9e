//! The TOML configuration file: its keys become options placed before the command
//! line's, so that one parser (clap's) checks both and the command line wins.

use std::ffi::OsString;

use clap::CommandFactory as _;

use super::Args;

/// The file named by `--config FILE` (or `--config=FILE`) in `argv`, else by
/// $CRASHTRACE_CONFIG.
fn config_path(argv: &[OsString]) -> Option<OsString> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    std::env::var_os("CRASHTRACE_CONFIG")
}

/// `argv` with the configuration file's options inserted after the program name.
pub fn args_with_config(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let shown = std::path::Path::new(&path).display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {shown}: {e}"))?;
    let from_file = file_args(&text).map_err(|e| format!("{shown}: {e}"))?;
    let mut out = Vec::with_capacity(argv.len() + from_file.len());
    let mut argv = argv.into_iter();
    out.extend(argv.next());
    out.extend(from_file.into_iter().map(OsString::from));
    out.extend(argv);
    Ok(out)
}

/// The options a configuration text gives, as `--name=value` arguments.
fn file_args(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let cmd = Args::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|_| {
                !matches!(
                    long.as_str(),
                    "config" | "check-config" | "help" | "version"
                )
            })
            .ok_or_else(|| format!("unknown key `{key}`"))?;
        // The environment, where an option reads one, overrides the file.
        if arg.get_env().is_some_and(|v| std::env::var_os(v).is_some()) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                _ => Err(format!("`{key}`: expected a string or a number")),
            }
        };
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if b {
                    out.push(format!("--{long}"));
                }
            }
            toml::Value::Array(items) if takes_value => {
                for v in &items {
                    out.push(format!("--{long}={}", scalar(v)?));
                }
            }
            v if takes_value => out.push(format!("--{long}={}", scalar(&v)?)),
            _ => return Err(format!("`{key}` is a switch: true or false")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn file_keys_become_options_that_the_command_line_overrides() {
        let args = file_args(
            "output = \"/var/log/c.jsonl\"\njournal = true\nstdout = false\n\
             comm = [\"python\", \"java\"]\nstack_size = \"32K\"\nmetrics-address = \
             \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        let mut argv = vec!["crashtrace".to_string()];
        argv.extend(args);
        argv.extend([
            "--output".into(),
            "/tmp/cli.jsonl".into(),
            "-n".into(),
            "node".into(),
        ]);
        let a = Args::try_parse_from(&argv).unwrap();
        assert_eq!(
            a.outputs.output.as_deref(),
            Some(std::path::Path::new("/tmp/cli.jsonl"))
        );
        assert!(a.outputs.journal && !a.outputs.stdout);
        let names: Vec<&str> = a.comms.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["python", "java", "node"]);
        assert_eq!(a.stack_size, 32 * 1024);
        assert!(a.outputs.metrics_address.is_some());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(
            file_args("nope = 1")
                .unwrap_err()
                .contains("unknown key `nope`")
        );
        assert!(
            file_args("journal = \"yes\"")
                .unwrap_err()
                .contains("switch")
        );
        assert!(file_args("output = [").is_err());
        assert!(
            file_args("comm = [{a = 1}]")
                .unwrap_err()
                .contains("`comm`")
        );
        assert!(
            file_args("config = \"x\"")
                .unwrap_err()
                .contains("unknown key")
        );
    }

    #[test]
    fn the_path_comes_from_the_option() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&argv(&["ct", "--config", "/etc/c.toml"])),
            Some("/etc/c.toml".into())
        );
        assert_eq!(
            config_path(&argv(&["ct", "--config=/x"])),
            Some("/x".into())
        );
        // After `--` it is the command's own argument.
        assert_ne!(
            config_path(&argv(&["ct", "--", "prog", "--config", "/y"])),
            Some("/y".into())
        );
    }
}
