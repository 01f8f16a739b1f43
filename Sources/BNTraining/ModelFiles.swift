import BNCheckpoint
import BNCore
import Foundation

/// Reads a checkpoint, mapping its errors to one-line failures (66 missing, 65 malformed).
public func readCheckpoint(_ path: String, flag: String) throws -> Checkpoint {
    do {
        return try Checkpoint.read(path: path)
    } catch let e as CheckpointError {
        // Missing, a link loop, a path through a file, not a regular file: 66 (no usable input).
        if case let .unreadable(_, reason) = e { throw fail("\(flag) '\(path)': \(reason)", kind: .notFound) }
        throw fail(e.description, kind: .badInput)
    }
}

/// Reads a checkpoint and rebuilds the model it describes, with its weights (evaluation use).
/// A checkpoint whose tensors do not fit its model spec is refused (exit 65, naming the tensor).
public func loadModel(_ path: String, flag: String = "--model") throws -> (Checkpoint, Network<Float>, StoredModel) {
    let checkpoint = try readCheckpoint(path, flag: flag)
    do {
        let model = try checkpoint.model(path: path)
        let net = try model.makeNetwork()
        try checkpoint.load(into: net, path: path)
        return (checkpoint, net, model)
    } catch let e as CheckpointError {
        throw fail(e.description, kind: .badInput)
    } catch let e as ModelSpec.ParseError {
        throw fail("checkpoint '\(path)': \(e.message)", kind: .badInput)
    }
}
