//! The `mini` binary: under a CNI plugin's name (a link in the agent's CNI bin dir) it runs that
//! built-in plugin; otherwise it parses the command line and hands it to the dispatcher.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next();
    let name = argv0
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    if let Some(plugin) = name.filter(|n| mini_cni::is_plugin_name(n)) {
        return ExitCode::from(mini_cni::plugin_main(plugin));
    }
    mini::main_with_args(std::env::args_os())
}
