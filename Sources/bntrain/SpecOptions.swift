import ArgumentParser
import BNCore
import BNTraining

/// The model flags `summary` and `gradcheck` share: which model, dfn2's width, and the model
/// without its BatchNorm layers. Training has the same three in its own `ModelOptions`.
struct SpecOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A preset (\(ModelSpec.presetNames)) or a layer spec, as for training. Without it, summary lists the presets and gradcheck checks dfn2.", valueName: "spec"))
    var model: String?

    @Option(help: "Hidden width of the dfn2 preset (default: \(ModelSpec.defaultHidden)).")
    var hidden: Int?

    @Flag(help: "Leave out every BatchNorm layer.")
    var noBatchnorm = false

    /// A configuration holding these flags (`model` when --model is not given).
    func config(model fallback: String) -> RunConfig {
        var c = RunConfig()
        c.model.spec = model ?? fallback
        c.model.hidden = hidden
        c.model.batchNorm = !noBatchnorm
        return c
    }

    func validate() throws {
        try config(model: "dfn2").checkFlags([.model, .hidden])
    }
}
