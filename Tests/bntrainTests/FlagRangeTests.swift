import Foundation
import XCTest

/// Every value-taking flag of every command, read off its own usage line, given the extremes
/// of the integer types (2^32, 2^63, -1): the command either accepts the value or refuses it
/// with one error line and a usage exit code; it never traps, crashes or allocates without
/// bound. Each command runs in a context that ends quickly once the flags pass (a missing
/// dataset or model file, exit 66; a four-unit model for summary and gradcheck).
final class FlagRangeTests: XCTestCase {
    static let extremes = ["4294967296", "9223372036854775808", "-1"]

    /// `--name` of every `--name <value>` that a help text lists (one option a line) or its
    /// usage line shows.
    func valueFlags(_ help: String) -> [String] {
        var flags: [String] = []
        for line in help.split(separator: "\n") {
            let words = line.split(separator: " ").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) }
            for (flag, value) in zip(words, words.dropFirst()) where flag.hasPrefix("--") && value.hasPrefix("<") && !flags.contains(flag) {
                flags.append(flag)
            }
        }
        return flags
    }

    func check(_ program: String, _ command: [String], context: [String], allowed: Set<Int32>, prefix: String) throws -> Int {
        let help = try runProgram(program, command + ["--help"])
        let flags = valueFlags(help.stdout)
        XCTAssertGreaterThan(flags.count, 0, "no flags read from \(command) --help: \(help.stdout)")
        let cases = flags.flatMap { flag in Self.extremes.map { command + context + ["\(flag)=\($0)"] } }
        // Two at a time: the cases are independent processes.
        var runs = [Run?](repeating: nil, count: cases.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            for i in stride(from: worker, to: cases.count, by: 2) {
                let r = try? runProgram(program, cases[i])
                lock.withLock { runs[i] = r }
            }
        }
        for (args, run) in zip(cases, runs) {
            guard let r = run else { XCTFail("\(args) did not run"); continue }
            XCTAssertTrue(allowed.contains(r.status), "\(args): exit \(r.status): \(r.stderr)")
            if r.status != 0 {
                XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): one line: \(r.stderr)")
                XCTAssertTrue(r.stderr.hasPrefix(prefix), "\(args): \(r.stderr)")
            }
        }
        return flags.count
    }

    func testEveryFlagOfEveryCommandTakesTheIntegerExtremesWithoutATrap() throws {
        let bin = productsDirectory.appendingPathComponent("bntrain").path
        let missing = NSTemporaryDirectory() + "bntrain-missing-\(UUID().uuidString)"
        var total = 0
        // Refused flags exit 64; accepted ones reach the missing file (66).
        total += try check(bin, [], context: ["--data", missing], allowed: [64, 66], prefix: "bntrain: error: ")
        total += try check(bin, ["eval"], context: ["--model", missing], allowed: [64, 66], prefix: "bntrain: error: ")
        total += try check(bin, ["predict"], context: ["--model", missing, "--images", missing], allowed: [64, 66], prefix: "bntrain: error: ")
        total += try check(bin, ["summary"], context: ["--model", "fc4-fc"], allowed: [0, 64, 66], prefix: "bntrain: error: ")
        total += try check(bin, ["gradcheck"], context: ["--model", "fc4-fc", "--batch", "2", "--samples", "1"], allowed: [0, 64, 66], prefix: "bntrain: error: ")
        // bnbench's flags are all sizes and choices: every extreme is refused.
        total += try check(productsDirectory.appendingPathComponent("bnbench").path, [], context: [], allowed: [64], prefix: "bnbench: error: ")
        XCTAssertGreaterThan(total, 60)
    }
}
