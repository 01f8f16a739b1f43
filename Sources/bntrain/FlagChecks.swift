import ArgumentParser
import BNTraining

extension RunConfig {
    /// The range rules of training's flags, for a subcommand that shares some of them: a usage
    /// error (exit 64) naming the flag when one of `keys` is out of range. The other values are
    /// the defaults, which pass.
    func checkFlags(_ keys: [ConfigKey]) throws {
        if let p = problem(), keys.contains(p.key) { throw ValidationError(p.description) }
    }
}
