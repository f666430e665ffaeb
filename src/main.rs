//! The `mwaa-dr` binary: hands the arguments to the library and exits with its code.

fn main() {
    let code = mwaa_dr::main_with_args(std::env::args_os().collect());
    std::process::exit(code);
}
