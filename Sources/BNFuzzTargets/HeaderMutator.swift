import BNCore
import Foundation

/// A structure-aware mutator for safetensors checkpoints: instead of flipping bytes (which
/// mostly breaks the JSON and never gets past the parser), it edits the header as JSON —
/// tensor shapes, dtypes and offsets, metadata values, the run configuration inside
/// `bntrain.config`, tensor names — and writes the framing back with a correct length, so
/// the fuzzer reaches the checks behind the parser: shapes against the spec, restored
/// configuration and training state, loading. Deterministic for a given seed.
public enum HeaderMutator {
    static let interestingNumbers: [Any] = [0, 1, -1, 2, 7, 36, 255, 256, 65535, 1 << 31, (1 << 31) - 1, 1 << 32, Int64.max, Int64.min, 1e308, -1e308, 0.5, 1.5, -0.0]
    static let interestingStrings = ["", "-1", "0", "1", "2", "9223372036854775807", "18446744073709551615", "99999999999999999999",
                                     "nan", "-nan", "inf", "1e308", "-1e-5", "0.9", "1", "biased", "unbiased", "all", "on", "off", "epoch", "none", "\n"]
    /// Every kind's sample tokens (valid and not), an unknown one and the presets.
    static let tokens = LayerKinds.all.flatMap { $0.sampleTokens } + ["bogus"] + ModelSpec.presets.map(\.name)
    static let metadataKeys = ["bntrain.model", "bntrain.epoch", "bntrain.step", "bntrain.shuffle_rng", "bntrain.dropout_rng", "bntrain.bn_eps",
                               "bntrain.bn_momentum", "bntrain.bn_running_var", "bntrain.partial_loss_sum", "bntrain.prev_train_loss",
                               "bntrain.best_val_acc", "bntrain.best_val_epoch", "bntrain.best_test_epoch", "bntrain.train_seconds", "bntrain.data_identity",
                               "bntrain.plateau_lr", "bntrain.plateau_best", "bntrain.plateau_bad_epochs", "bntrain.early_best",
                               "bntrain.early_best_epoch", "bntrain.early_bad_epochs"]
    /// Counters a run counts up from where a checkpoint left them, at their types' extremes.
    static let extremeCounters: [Int64] = [.max, .max - 1, .min, -1, 0, Int64(Int32.max), 1 << 53, 1_000_000_000_000_000]
    static let configKeys = ["model", "epochs", "batch", "lr", "hidden", "train_limit", "val_split", "shuffle", "batchnorm", "bn_momentum",
                             "bn_eps", "bn_running_var", "init", "seed", "threads", "eval_batch"]

    /// The mutated file, or nil when `bytes` is not a safetensors file with a JSON header.
    public static func mutate(_ bytes: [UInt8], seed: UInt32, maxSize: Int) -> [UInt8]? {
        guard bytes.count >= 8 else { return nil }
        let n = bytes.withUnsafeBytes { Int(truncatingIfNeeded: UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard n >= 2, n <= bytes.count - 8,
              var header = (try? JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)]))) as? [String: Any] else { return nil }
        var rng = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15)
        func pick<T>(_ xs: [T]) -> T { xs[rng.nextInt(below: xs.count)] }
        let tensorNames = header.keys.filter { $0 != "__metadata__" }.sorted()
        var metadata = header["__metadata__"] as? [String: String] ?? [:]
        var data = Array(bytes[(8 + n)...])
        switch rng.nextInt(below: 9) {
        case 8:  // a stored integer counter (num_batches_tracked, optimizer.step) or a metadata counter at an extreme
            let counters = tensorNames.filter { (header[$0] as? [String: Any])?["dtype"] as? String == "I64" }
            if let name = counters.isEmpty ? nil : pick(counters), let e = header[name] as? [String: Any],
               let offs = e["data_offsets"] as? [Int], offs.count == 2, offs[0] >= 0, offs[0] + 8 <= data.count, rng.nextInt(below: 2) == 0 {
                withUnsafeBytes(of: pick(extremeCounters).littleEndian) { for i in 0..<8 { data[offs[0] + i] = $0[i] } }
            } else {
                metadata[pick(["bntrain.epoch", "bntrain.step", "bntrain.plateau_bad_epochs", "bntrain.early_bad_epochs", "bntrain.early_best_epoch",
                               "bntrain.best_val_epoch", "bntrain.best_test_epoch"])] = String(pick(extremeCounters))
            }
        case 0 where !tensorNames.isEmpty:  // a shape dimension
            let name = pick(tensorNames)
            if var e = header[name] as? [String: Any], var shape = e["shape"] as? [Any] {
                if shape.isEmpty || rng.nextInt(below: 4) == 0 { shape.append(pick(interestingNumbers)) } else { shape[rng.nextInt(below: shape.count)] = pick(interestingNumbers) }
                e["shape"] = shape
                header[name] = e
            }
        case 1 where !tensorNames.isEmpty:  // a dtype
            let name = pick(tensorNames)
            if var e = header[name] as? [String: Any] {
                e["dtype"] = pick(["F32", "F64", "I64", "BF16", "F16", "U8", "BOOL", ""])
                header[name] = e
            }
        case 2 where !tensorNames.isEmpty:  // data offsets
            let name = pick(tensorNames)
            if var e = header[name] as? [String: Any], var offs = e["data_offsets"] as? [Any], offs.count == 2 {
                offs[rng.nextInt(below: 2)] = pick(interestingNumbers)
                e["data_offsets"] = offs
                header[name] = e
            }
        case 3:  // a metadata value
            let key = pick(metadataKeys)
            metadata[key] = key == "bntrain.model" ? (0..<(1 + rng.nextInt(below: 5))).map { _ in pick(tokens) }.joined(separator: "-") : pick(interestingStrings)
        case 4:  // a value of the run configuration
            var config = (metadata["bntrain.config"].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: Any]) ?? [:]
            let key = pick(configKeys)
            switch rng.nextInt(below: 4) {
            case 0: config[key] = pick(interestingNumbers)
            case 1: config[key] = pick(interestingStrings)
            case 2: config[key] = key == "model" ? pick(tokens) + "-fc" : NSNull()
            default: config[key] = nil
            }
            if let data = try? JSONSerialization.data(withJSONObject: config), let text = String(data: data, encoding: .utf8) { metadata["bntrain.config"] = text }
        case 5:  // drop a tensor or a metadata key
            if rng.nextInt(below: 2) == 0, !tensorNames.isEmpty { header[pick(tensorNames)] = nil } else { metadata[pick(metadataKeys)] = nil }
        case 6 where !tensorNames.isEmpty:  // a tensor under another name (another layer index)
            let name = pick(tensorNames)
            let suffix = name.split(separator: ".", maxSplits: 1).last.map(String.init) ?? "weight"
            header["\(rng.nextInt(below: 12)).\(suffix)"] = header[name]
        default:  // a tensor renamed
            if let name = tensorNames.isEmpty ? nil : pick(tensorNames) {
                let e = header[name]
                header[name] = nil
                header[pick(["0", "1", "2", "3", "fc1", "bn", "fc2"]) + "." + pick(["weight", "bias", "running_mean", "running_var", "num_batches_tracked"])] = e
            }
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata } else { header["__metadata__"] = nil }
        guard let json = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]) else { return nil }
        var out = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) }
        out += json
        out += data
        return out.count <= maxSize ? out : Array(out.prefix(maxSize))
    }
}
