// bnbench: how close the training step is to its matrix products.
//
//   bnbench [--model dfn2] [--batch 64] [--hidden 200] [--inputs 784] [--classes 10] [--steps 313] [--threads 1] [--repeats 5]
//
// The products are those the model's Dense layers run in one training step, read off the
// built network (each layer's forward, weight gradient and, except for the first layer,
// input gradient, in the layout the layer stores its weight), so any --model is measured.
// Prints key=value lines (stdout):
//   gemm shape=... gflops=...           each of the step's products alone
//   gemm_step seconds_per_epoch=...     the products back to back, `steps` times
//   train_step seconds_per_epoch=...    Network.trainStep on random data, `steps` times
//   overhead ratio=train_step/gemm_step
//   gemm_square n=2048 gflops=...       a large square product, for the machine's peak
// Each figure is the best of `repeats` runs (least disturbed by the rest of the machine).
import BNCore
import BNPlatform
import Foundation

BLASKernel.reexecIfUndetected()
#if canImport(Glibc)
import Glibc
#endif

var opts: [String: Int] = ["batch": 64, "hidden": 200, "inputs": 784, "classes": 10, "steps": 313, "threads": 1, "repeats": 5, "square": 2048]
var modelText = "dfn2"
var optimizerSettings = OptimizerSettings()
var argv = CommandLine.arguments.dropFirst()
while let a = argv.popFirst() {
    if a == "--model", let v = argv.popFirst() {
        modelText = v
        continue
    }
    // --optimizer sgd|sgd-momentum|adam|adamw|rmsprop: the update the train_step loop uses.
    if a == "--optimizer", let v = argv.popFirst() {
        switch v {
        case "sgd-momentum": optimizerSettings.momentum = 0.9
        default:
            guard let k = OptimizerSettings.Kind(rawValue: v) else {
                FileHandle_stderr("bnbench: error: --optimizer takes sgd, sgd-momentum, adam, adamw or rmsprop\n")
                exit(64)
            }
            optimizerSettings.kind = k
        }
        continue
    }
    guard a.hasPrefix("--"), let key = Optional(String(a.dropFirst(2))), opts[key] != nil, let v = argv.popFirst(), let n = Int(v), n > 0 else {
        FileHandle_stderr("bnbench: error: bad argument '\(a)'; flags: \(opts.keys.sorted().map { "--" + $0 }.joined(separator: " ")) each with a positive integer, or --model SPEC\n")
        exit(64)
    }
    opts[key] = n
}
func FileHandle_stderr(_ s: String) { fputs(s, stderr) }

let (n, h, d, c, steps, repeats) = (opts["batch"]!, opts["hidden"]!, opts["inputs"]!, opts["classes"]!, opts["steps"]!, opts["repeats"]!)
BLAS.setThreads(opts["threads"]!)

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func best(_ body: () -> Void) -> Double {
    body()  // warm-up
    var b = Double.infinity
    for _ in 0..<repeats {
        let t0 = now()
        body()
        b = min(b, now() - t0)
    }
    return b
}

var rng = SplitMix64(seed: 1)
func randomMatrix(_ r: Int, _ k: Int) -> Matrix<Float> {
    let m = Matrix<Float>(rows: r, cols: k)
    for i in 0..<m.count { m.data[i] = Float(rng.nextNormal()) }
    return m
}

var initRNG = SplitMix64(seed: 2)
let spec: ModelSpec
let net: Network<Float>
do {
    spec = try ModelSpec.parse(modelText, hidden: h)
    // A convolutional model sees the input as a square one-channel image (784 = 28 x 28).
    let side = Int(Double(d).squareRoot())
    net = try spec.build(Float.self, inputs: d, classes: c, image: side * side == d ? ImageShape(1, side, side) : nil, rng: &initRNG)
} catch {
    FileHandle_stderr("bnbench: error: --model \(error)\n")
    exit(64)
}

// The products of one step, as Dense.forward and Dense.backward issue them (row-major):
//   forward: (n,in) x W -> (n,out), W stored (in,out) [inOut] or (out,in) used transposed [outIn]
//   dW:      (n,out)^T x (n,in) -> (out,in) [outIn], or (n,in)^T x (n,out) -> (in,out) [inOut]
//   dx:      (n,out) x W -> (n,in), skipped for the first layer
struct Shape { let name: String; let tA: Bool; let tB: Bool; let m: Int; let n: Int; let k: Int; let a: Matrix<Float>; let b: Matrix<Float>; let out: Matrix<Float> }
let x = randomMatrix(n, d)
var shapes: [Shape] = []
var input = x
for layer in net.layers {
    guard let dense = layer as? Dense<Float> else { continue }
    // Named by the layer's index in the spec, as its tensors are (dfn2: fc0 and fc3).
    let i = dense.weight.name.split(separator: ".").first.map(String.init) ?? "?"
    let (fin, fout) = (dense.inFeatures, dense.outFeatures)
    let w = dense.weight.value, inOut = dense.weightLayout == .inOut
    let dz = randomMatrix(n, fout)
    shapes.append(Shape(name: "fc\(i)_forward", tA: false, tB: !inOut, m: n, n: fout, k: fin, a: input, b: w, out: Matrix(rows: n, cols: fout)))
    if inOut {
        shapes.append(Shape(name: "fc\(i)_dweight", tA: true, tB: false, m: fin, n: fout, k: n, a: input, b: dz, out: Matrix(rows: fin, cols: fout)))
    } else {
        shapes.append(Shape(name: "fc\(i)_dweight", tA: true, tB: false, m: fout, n: fin, k: n, a: dz, b: input, out: Matrix(rows: fout, cols: fin)))
    }
    if dense.computesInputGradient {
        shapes.append(Shape(name: "fc\(i)_dinput", tA: false, tB: inOut, m: n, n: fin, k: fout, a: dz, b: w, out: Matrix(rows: n, cols: fin)))
    }
    input = randomMatrix(n, fout)
}
func run(_ s: Shape) {
    Float.gemm(transA: s.tA, transB: s.tB, m: s.m, n: s.n, k: s.k, alpha: 1, a: s.a.data, lda: s.a.cols, b: s.b.data, ldb: s.b.cols, beta: 0, c: s.out.data, ldc: s.out.cols)
}
let flopsPerStep = shapes.reduce(0) { $0 + 2 * $1.m * $1.n * $1.k }
print("config model=\(spec.canonical) optimizer=\(optimizerSettings.kind.rawValue) momentum=\(optimizerSettings.momentum) batch=\(n) hidden=\(h) inputs=\(d) classes=\(c) steps=\(steps) threads=\(BLAS.threads) blas_core=\(BLAS.coreName) flops_per_step=\(flopsPerStep)")
for s in shapes {
    let reps = 200
    let t = best { for _ in 0..<reps { run(s) } }
    let flops = Double(2 * s.m * s.n * s.k * reps)
    print("gemm shape=\(s.name) m=\(s.m) n=\(s.n) k=\(s.k) gflops=\(String(format: "%.1f", flops / t / 1e9))")
}
optimizerSettings.learningRate = optimizerSettings.kind == .sgd ? 0.01 : 1e-3
let sgd = optimizerSettings.make(Float.self)
let labels = UnsafeMutablePointer<Int32>.allocate(capacity: n)
for i in 0..<n { labels[i] = Int32(rng.nextInt(below: c)) }
// The five products alone and the full step, interleaved (A B A B ...) so that both see the
// same machine: this shared VM's speed drifts by tens of percent from minute to minute.
func timeOnce(_ body: @escaping () -> Void) -> Double {
    let t0 = now()
    body()
    return now() - t0
}
let runGemmStep = { for _ in 0..<steps { for s in shapes { run(s) } } }
let runTrainStep = { for _ in 0..<steps { _ = net.trainStep(x, labels: labels, optimizer: sgd) } }
runGemmStep()
runTrainStep()
var gemmStep = Double.infinity, trainStep = Double.infinity
for _ in 0..<repeats {
    gemmStep = min(gemmStep, timeOnce(runGemmStep))
    trainStep = min(trainStep, timeOnce(runTrainStep))
}
print("gemm_step seconds_per_epoch=\(String(format: "%.4f", gemmStep)) gflops=\(String(format: "%.1f", Double(flopsPerStep * steps) / gemmStep / 1e9))")
print("train_step seconds_per_epoch=\(String(format: "%.4f", trainStep)) gflops=\(String(format: "%.1f", Double(flopsPerStep * steps) / trainStep / 1e9))")
print("overhead ratio=\(String(format: "%.3f", trainStep / gemmStep))")

// Allocation check. When Tests/python/support/malloc_count.c is preloaded it exports
// malloc_count_window(on); bracket `steps` more training steps (all warmed up above) with it,
// so the counter reports the heap allocations of those steps alone (the test expects none).
typealias WindowFunction = @convention(c) (Int32) -> Void
if let symbol = dlsym(nil, "malloc_count_window") {
    let window = unsafeBitCast(symbol, to: WindowFunction.self)
    window(1)
    runTrainStep()
    window(0)
}

let sq = opts["square"]!
let A = randomMatrix(sq, sq), B = randomMatrix(sq, sq), C = Matrix<Float>(rows: sq, cols: sq)
let tsq = best { Float.gemm(transA: false, transB: false, m: sq, n: sq, k: sq, alpha: 1, a: A.data, lda: sq, b: B.data, ldb: sq, beta: 0, c: C.data, ldc: sq) }
let squareFlops = 2 * Double(sq) * Double(sq) * Double(sq)
print("gemm_square n=\(sq) gflops=\(String(format: "%.1f", squareFlops / tsq / 1e9))")
