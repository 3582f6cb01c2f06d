fn main() -> std::process::ExitCode {
    nanogrid::cli::main()
}
