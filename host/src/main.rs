/// mimalloc instead of glibc malloc: a node allocates small, short-lived objects on every
/// request from every worker thread while keeping tens of thousands of others (the trace
/// ring's spans, cached responses, kv buffers) alive; under glibc that mix made free-list
/// consolidation (`malloc_consolidate`, `unlink_chunk`) a tenth of a busy node's CPU
/// (`./dev bench tracing` measures the difference). Built without transparent huge pages
/// (`no_thp`, see host/Cargo.toml).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nanogrid::cli::main()
}
