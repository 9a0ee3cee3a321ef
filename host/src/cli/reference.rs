//! What is generated from the command line's own definition: the Markdown reference
//! (`docs/cli.md`, kept fresh by a test), the man page, and shell completions.
//!
//! Owns the layout of those documents. Must not describe a command by hand: every word about a
//! command comes from its clap definition (doc comments in `cli/`), so the documents cannot drift.

use std::fmt::Write as _;

use clap::{Arg, Command, CommandFactory};

use super::Cli;

/// The command line as users see it, with every subcommand's full name (`gofer run start`).
fn built() -> Command {
    let mut command = Cli::command();
    command.build();
    command
}

/// The Markdown reference: global options, then every command in the order `--help` lists them.
pub fn markdown() -> String {
    let command = built();
    let mut out = String::new();
    out.push_str(
        "# The `gofer` command line\n\n\
         <!-- Generated from the CLI's definition by `gofer reference markdown` (make cli-docs);\n\
         a test fails when it is stale. Edit the doc comments in host/src/cli/, not this file. -->\n\n",
    );
    if let Some(about) = command.get_about() {
        let _ = writeln!(out, "{about}\n");
    }
    out.push_str(
        "One binary is both server and client. A failing command prints one line, \
         `error: <what went wrong>`, and exits with 1. Examples and the reasoning behind the \
         commands are in [cli-guide.md](cli-guide.md).\n\n",
    );
    out.push_str("## Global options\n\nEvery command takes these.\n\n");
    let globals: Vec<&Arg> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set() && !arg.is_hide_set())
        .collect();
    arguments_table(&mut out, &globals);
    for sub in command.get_subcommands() {
        section(&mut out, sub);
    }
    out
}

/// One command's section, then its subcommands'.
fn section(out: &mut String, command: &Command) {
    if command.is_hide_set() || command.get_name() == "help" {
        return;
    }
    let name = command.get_bin_name().unwrap_or(command.get_name());
    let _ = writeln!(out, "## `{name}`\n");
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let has_subcommands = command
        .get_subcommands()
        .any(|sub| !sub.is_hide_set() && sub.get_name() != "help");
    if !has_subcommands {
        let usage = command.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        let _ = writeln!(out, "```text\n{usage}\n```\n");
        let own: Vec<&Arg> = command
            .get_arguments()
            .filter(|arg| !arg.is_global_set() && !arg.is_hide_set())
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .collect();
        if !own.is_empty() {
            arguments_table(out, &own);
        }
    }
    for sub in command.get_subcommands() {
        section(out, sub);
    }
}

/// A table of arguments: how to write each, its environment variable, default and help.
fn arguments_table(out: &mut String, arguments: &[&Arg]) {
    out.push_str("| argument | env | default | |\n|---|---|---|---|\n");
    for arg in arguments {
        let value_names = arg
            .get_value_names()
            .map(|names| {
                names
                    .iter()
                    .map(|name| format!("<{name}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
        let takes_value = arg.get_action().takes_values();
        let spelled = if arg.is_positional() {
            value_names
        } else {
            let mut forms = Vec::new();
            if let Some(short) = arg.get_short() {
                forms.push(format!("-{short}"));
            }
            if let Some(long) = arg.get_long() {
                forms.push(format!("--{long}"));
            }
            let forms = forms.join(", ");
            if takes_value {
                format!("{forms} {value_names}")
            } else {
                forms
            }
        };
        let env = arg
            .get_env()
            .map(|env| format!("`{}`", env.to_string_lossy()))
            .unwrap_or_default();
        // A flag's default (`false`) says nothing.
        let default = arg
            .get_default_values()
            .iter()
            .filter(|_| takes_value)
            .map(|value| format!("`{}`", value.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut help = arg
            .get_help()
            .map(|help| help.to_string())
            .unwrap_or_default()
            .replace('\n', " ");
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| format!("`{}`", value.get_name()))
            .collect();
        let mut notes = Vec::new();
        if takes_value && !choices.is_empty() {
            notes.push(format!("one of {}", choices.join(", ")));
        }
        if arg.is_required_set() && !arg.is_positional() {
            notes.push("required".to_string());
        }
        if !notes.is_empty() {
            let _ = write!(help, " ({})", notes.join("; "));
        }
        let _ = writeln!(
            out,
            "| `{}` | {env} | {default} | {} |",
            spelled.replace('|', "\\|"),
            help.trim().replace('|', "\\|")
        );
    }
    out.push('\n');
}

/// The man page, gofer(1), with every subcommand in it.
pub fn man_page() -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(built())
        .render(&mut page)
        .expect("rendering into memory does not fail");
    for sub in built().get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let _ = clap_mangen::Man::new(sub.clone()).render_subcommands_section(&mut page);
    }
    page
}

/// Completions for `shell`. Made in memory: clap_complete panics when its writer fails (a
/// closed pipe), which the caller's write reports as an error instead.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "gofer", &mut script);
    script
}

#[cfg(test)]
mod tests {
    /// Like the OpenAPI document: the reference in docs/ is what the code says.
    #[test]
    fn docs_cli_md_is_generated_and_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == super::markdown(),
            "docs/cli.md is stale: run `make cli-docs` (gofer reference markdown > docs/cli.md)"
        );
    }

    #[test]
    fn the_man_page_and_completions_name_every_command() {
        let page = String::from_utf8(super::man_page()).unwrap();
        assert!(page.contains(".TH gofer 1"), "{}", &page[..200]);
        for command in ["service", "pipeline", "run", "completion"] {
            assert!(
                page.contains(command),
                "{command} is missing from the man page"
            );
        }
        let bash = String::from_utf8(super::completions(clap_complete::Shell::Bash)).unwrap();
        assert!(
            bash.contains("gofer__run__start") || bash.contains("gofer,run"),
            "bash"
        );
    }
}
