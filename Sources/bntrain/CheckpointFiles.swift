import BNCheckpoint
import BNCore
import Foundation

/// Reads a checkpoint, mapping its errors to one-line failures (66 missing, 65 malformed).
func readCheckpoint(_ path: String, flag: String) throws -> Checkpoint {
    do {
        return try Checkpoint.read(path: path)
    } catch let e as CheckpointError {
        if case .unreadable = e, !FileManager.default.fileExists(atPath: path) {
            throw fail("\(flag) '\(path)' does not exist", code: ExitStatus.noInput)
        }
        throw fail(e.description, code: ExitStatus.dataError)
    }
}

/// Reads a checkpoint and builds the network it describes (evaluation use).
func loadModel(_ path: String) throws -> (Checkpoint, Network<Float>, ModelSpec) {
    let checkpoint = try readCheckpoint(path, flag: "--model")
    do {
        let spec = try checkpoint.spec(path: path)
        var rng = SplitMix64(seed: 0)
        let net = spec.makeNetwork(rng: &rng)
        try checkpoint.load(into: net, path: path)
        return (checkpoint, net, spec)
    } catch let e as CheckpointError {
        throw fail(e.description, code: ExitStatus.dataError)
    }
}
