import ArgumentParser
import BNCore
import BNPlatform
import BNTraining

/// The flags `eval` and `predict` share: the checkpoint to load and the BLAS threads.
struct SavedModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A safetensors checkpoint written by bntrain --save (or with the same tensor names).", valueName: "file"))
    var model: String

    @Option(help: "BLAS threads.")
    var threads = RunConfig().kernels.threads

    func validate() throws {
        var c = RunConfig()
        c.kernels.threads = threads
        try c.checkFlags([.threads])
    }

    /// Sets up the process's BLAS for `threads` (re-executing once if OpenBLAS needs a kernel).
    func prepareKernels() {
        BLASKernel.reexecIfUndetected(threads: threads)
        MatMul.setThreads(threads)
    }
}
