// bnbench: how close the training step is to its matrix products.
//
//   bnbench [--model dfn2] [--batch 64] [--hidden 200] [--inputs 784] [--classes 10] [--steps 313] [--threads 1] [--repeats 5]
//           [--precision fp32|bf16] [--gemm openblas|onednn|auto] [--conv auto|onednn|im2col] [--shapes 1|0] [--breakdown 0|1]
//
// The products are those the model's Dense and Conv2D layers run in one training step, read
// off the built network (each layer's forward, weight gradient and, except for the first
// layer, input gradient, in the layout the layer stores its weight; a convolution's three
// per-example products once per example), so any --model is measured. --precision and --gemm
// choose the kernels of the train_step (as bntrain's flags of the same names).
// Prints key=value lines (stdout):
//   gemm shape=... gflops=... openblas=... onednn=... bf16=...
//                                       each of the step's products alone, with the chosen
//                                       kernels and with each library (GFLOP/s)
//   gemm_step seconds_per_epoch=...     the products back to back, `steps` times
//   train_step seconds_per_epoch=...    Network.trainStep on random data, `steps` times
//   overhead ratio=train_step/gemm_step
//   gemm_square n=2048 gflops=...       a large square product, for the machine's peak
//   workers_profile ...                 with a batch of several shards: compute, barrier
//                                       waits, reduction and the serial part of a step
//   bnbench --barrier: the worker pool's costs instead (docs/parallel.md), one line each:
//   barrier workers=2 spins=4000 ns_per_barrier=...   pool.barrier() inside one run
//   pool_run workers=2 spins=4000 ns_per_run=...      an empty pool.run, start to finish
// Each figure is the best of `repeats` runs (least disturbed by the rest of the machine).
// --shapes 0 skips the per-shape and square lines (a quick A/B of the step between builds).
import BNCore
import BNData
import BNPlatform
import BNTraining
import Foundation

BLASKernel.reexecIfUndetected()
#if canImport(Glibc)
import Glibc
#endif

var opts: [String: Int] = ["batch": 64, "hidden": 200, "inputs": 784, "classes": 10, "steps": 313, "threads": 1, "repeats": 5, "square": 2048, "shapes": 1, "breakdown": 0, "workers": 1, "shard-size": 32, "ghost-shards": 0, "renorm": 0, "bn-frozen": 0]
/// Each flag's accepted values: sizes a benchmark can allocate (a batch of 65536 784-pixel
/// images is 205 MB), thread counts OpenBLAS takes, 0/1 switches.
let limits: [String: ClosedRange<Int>] = [
    "batch": 1...65536, "hidden": 1...ModelSpec.maxWidth, "inputs": 1...(1 << 20), "classes": 2...65536, "steps": 1...10_000_000,
    "threads": 1...1024, "repeats": 1...1000, "square": 1...8192, "shapes": 0...1, "breakdown": 0...1,
    "workers": 1...1024, "shard-size": 1...65536, "ghost-shards": 0...65536, "renorm": 0...1, "bn-frozen": 0...1,
]
var modelText = "dfn2"
var precision = Precision.fp32, library = GEMMLibrary.openblas, convolution = ConvolutionKernels.auto  // bntrain's defaults
var optimizerSettings = OptimizerSettings()
var argv = CommandLine.arguments.dropFirst()
if argv.first == "--barrier" {
    benchmarkBarrier()
    exit(0)
}
let usage = "USAGE: bnbench [--model <spec>] [--batch <n>] [--workers <n>] [--shard-size <n>] [--hidden <n>] [--inputs <n>] [--classes <n>] [--steps <n>] [--threads <n>] [--repeats <n>] [--square <n>] [--precision <fp32|bf16>] [--gemm <openblas|onednn|auto>] [--conv <auto|onednn|im2col>] [--optimizer <sgd|sgd-momentum|adam|adamw|rmsprop>] [--shapes <0|1>] [--breakdown <0|1>] [--ghost-shards <n>] [--renorm <0|1>] [--bn-frozen <0|1>]"
while let a = argv.popFirst() {
    if a == "--help" || a == "-h" {
        print("bnbench: how close the training step is to its matrix products (key=value lines on stdout).\n" + usage)
        exit(0)
    }
    if a == "--model", let v = argv.popFirst() {
        modelText = v
        continue
    }
    if a == "--precision", let v = argv.popFirst(), let p = Precision(rawValue: v) {
        precision = p
        continue
    }
    if a == "--gemm", let v = argv.popFirst(), let l = GEMMLibrary(rawValue: v) {
        library = l
        continue
    }
    if a == "--conv", let v = argv.popFirst(), let k = ConvolutionKernels(rawValue: v) {
        convolution = k
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
    guard a.hasPrefix("--"), let key = Optional(String(a.dropFirst(2))), let range = limits[key], let v = argv.popFirst() else {
        FileHandle_stderr("bnbench: error: bad argument '\(a)'; flags: \(opts.keys.sorted().map { "--" + $0 }.joined(separator: " ")) each with an integer, or --model SPEC, --precision fp32|bf16, --gemm openblas|onednn|auto, --conv auto|onednn|im2col\n")
        exit(64)
    }
    guard let n = Int(v), range.contains(n) else {
        FileHandle_stderr("bnbench: error: --\(key) must be an integer from \(range.lowerBound) to \(range.upperBound) (got '\(v)')\n")
        exit(64)
    }
    opts[key] = n
}
func FileHandle_stderr(_ s: String) { fputs(s, stderr) }

let (n, h, d, c, steps, repeats) = (opts["batch"]!, opts["hidden"]!, opts["inputs"]!, opts["classes"]!, opts["steps"]!, opts["repeats"]!)
MatMul.setThreads(opts["threads"]!)
func makeKernels(_ p: Precision, _ l: GEMMLibrary) -> Kernels {
    do { return try Kernels(precision: p, library: l, convolution: convolution) } catch {
        FileHandle_stderr("bnbench: error: \(error)\n")
        exit(64)
    }
}
let kernels = makeKernels(precision, library)

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
let parallel: DataParallel<Float>
do {
    spec = try ModelSpec.parse(modelText, hidden: h)
    // A convolutional model sees the input as a square one-channel image (784 = 28 x 28).
    let side = Int(Double(d).squareRoot())
    _ = try spec.summary(inputs: d, classes: c, image: side * side == d ? ImageShape(1, side, side) : nil)
    // As training does: refuse, before allocating, what cannot fit in half the memory.
    let needed = Trainer.memoryEstimate(spec: spec, inputs: d, image: ImageShape(1, side, d / max(side, 1)), classes: c, batch: n, evalBatch: 0) + 4 * Double(n * d)
    if needed > Double(Memory.physicalBytes) / 2 {
        FileHandle_stderr("bnbench: error: --model '\(spec.canonical)' with --batch \(n) needs about \(Memory.describe(Int(min(needed, 9e18)))), more than half of this machine's \(Memory.describe(Memory.physicalBytes)); use a smaller --batch, --inputs or --hidden\n")
        exit(64)
    }
    net = try spec.build(Float.self, inputs: d, classes: c, image: side * side == d ? ImageShape(1, side, side) : nil, kernels: kernels, rng: &initRNG)
    // bntrain's step: the batch in shards of --shard-size on --workers workers (docs/parallel.md).
    let plan = ShardPlan(shardSize: opts["shard-size"]!)
    let replicas = try (1..<max(plan.shardCount(batch: n), 1)).map { _ in
        var r = SplitMix64(seed: 0)
        return try spec.build(Float.self, inputs: d, classes: c, image: side * side == d ? ImageShape(1, side, side) : nil, kernels: makeKernels(precision, library), rng: &r)
    }
    let workers = opts["workers"]!
    if workers > 1 { MatMul.setThreads(1) }
    // Under mpirun, the step over this rank's shards with the others' exchanged (Ranks).
    let ranks: Ranks?
    do { ranks = try Ranks.join() } catch { fputs("bnbench: \(error)\n", stderr); exit(69) }
    ranks?.finalizeAtExit()
    guard let p = DataParallel(model: net, replicas: replicas, plan: plan, workers: workers, batchNormSync: .on, ghostShards: opts["ghost-shards"]!, ranks: ranks, setup: { _ in if workers > 1 { OneDNN.shared?.setThreads(1) } }) else {
        FileHandle_stderr("bnbench: error: cannot start \(workers) worker threads\n")
        exit(71)
    }
    p.setBatchNormFrozen(opts["bn-frozen"]! == 1)
    parallel = p
} catch {
    FileHandle_stderr("bnbench: error: --model \(error)\n")
    exit(64)
}

// The products of one step, as Dense.forward and Dense.backward issue them (row-major):
//   forward: (n,in) x W -> (n,out), W stored (in,out) [inOut] or (out,in) used transposed [outIn]
//   dW:      (n,out)^T x (n,in) -> (out,in) [outIn], or (n,in)^T x (n,out) -> (in,out) [inOut]
//   dx:      (n,out) x W -> (n,in), skipped for the first layer
//   conv, per example: forward W (O, Ckk) x col (Ckk, P); dW += dY (O, P) x col^T; dcol = W^T x dY
struct Shape {
    let name: String; let tA: Bool; let tB: Bool; let m: Int; let n: Int; let k: Int; let a: Matrix<Float>; let b: Matrix<Float>; let out: Matrix<Float>
    var repeats = 1  // calls per step (a convolution's products run once per example)
}
let x = randomMatrix(n, d)
var shapes: [Shape] = []
var input = x
for layer in net.layers {
    if let conv = layer as? Conv2D<Float> {
        let i = conv.weight.name.split(separator: ".").first.map(String.init) ?? "?"
        let (o, p, ckk) = (conv.output.c, conv.output.h * conv.output.w, conv.weight.value.cols)
        let w = conv.weight.value, col = randomMatrix(ckk, p), dy = randomMatrix(o, p)
        shapes.append(Shape(name: "conv\(i)_forward", tA: false, tB: false, m: o, n: p, k: ckk, a: w, b: col, out: Matrix(rows: o, cols: p), repeats: n))
        shapes.append(Shape(name: "conv\(i)_dweight", tA: false, tB: true, m: o, n: ckk, k: p, a: dy, b: col, out: Matrix(rows: o, cols: ckk), repeats: n))
        if conv.computesInputGradient {
            shapes.append(Shape(name: "conv\(i)_dinput", tA: true, tB: false, m: ckk, n: p, k: o, a: w, b: dy, out: Matrix(rows: ckk, cols: p), repeats: n))
        }
        continue
    }
    guard let dense = layer as? Dense<Float> else { continue }
    // Named by the layer's index in the spec, as its tensors are (dfn2: fc0 and fc3).
    let i = dense.weight.name.split(separator: ".").first.map(String.init) ?? "?"
    let (fin, fout) = (dense.inFeatures, dense.outFeatures)
    if input.cols != fin { input = randomMatrix(n, fin) }  // after convolutions and pooling
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
func run(_ s: Shape, _ kernels: Kernels = kernels) {
    Float.gemm(using: kernels, transA: s.tA, transB: s.tB, m: s.m, n: s.n, k: s.k, alpha: 1, a: s.a.data, lda: s.a.cols, b: s.b.data, ldb: s.b.cols, beta: 0, c: s.out.data, ldc: s.out.cols)
}
let flopsPerStep = shapes.reduce(0) { $0 + 2 * $1.m * $1.n * $1.k * $1.repeats }
let dnnl = OneDNN.shared
print("config model=\(spec.canonical) optimizer=\(optimizerSettings.kind.rawValue) momentum=\(optimizerSettings.momentum) batch=\(n) hidden=\(h) inputs=\(d) classes=\(c) steps=\(steps) threads=\(BLAS.threads) precision=\(precision.rawValue) kernels=\(kernels) conv=\(kernels.convolution.rawValue) blas_core=\(BLAS.coreName) onednn=\(OneDNN.summary) flops_per_step=\(flopsPerStep)")
// Each product alone: with the chosen kernels, then with each library (when available).
func gflops(_ s: Shape, _ p: Precision, _ l: GEMMLibrary) -> Double {
    let k = makeKernels(p, l)
    let reps = max(1, Int(2e8 / Double(2 * s.m * s.n * s.k)))
    let t = best { for _ in 0..<reps { run(s, k) } }
    return Double(2 * s.m * s.n * s.k * reps) / t / 1e9
}
for s in shapes where opts["shapes"]! != 0 {
    var line = "gemm shape=\(s.name) m=\(s.m) n=\(s.n) k=\(s.k) calls_per_step=\(s.repeats) gflops=\(String(format: "%.1f", gflops(s, precision, library)))"
    line += " openblas=\(String(format: "%.1f", gflops(s, .fp32, .openblas)))"
    if let dnnl {
        line += " onednn=\(String(format: "%.1f", gflops(s, .fp32, .onednn)))"
        if dnnl.hasBF16 { line += " bf16=\(String(format: "%.1f", gflops(s, .bf16, .onednn)))" }
    }
    print(line)
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
let runGemmStep = { for _ in 0..<steps { for s in shapes { for _ in 0..<s.repeats { run(s) } } } }
// --renorm 1: batch renormalization with limits that change every step, as training sets them.
let renorm = opts["renorm"]! == 1
let runTrainStep = {
    for k in 0..<steps {
        if renorm { parallel.setRenormLimits(RenormLimits(rmax: 1 + Float(k % 100) / 50, dmax: Float(k % 100) / 20)) }
        _ = parallel.trainStep(x, labels: labels, optimizer: sgd)
    }
}
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
// Where a sharded step's time goes (a batch of more than one shard), `steps` more steps:
//   workers_profile workers=W shards=K step_us=... compute_us=... wait_us=... reduce_us=... serial_us=...
// compute, wait (at barriers) and reduce are the workers' means per step; serial is the
// caller's part outside the workers (dropout keys, clipping, the optimizer, running statistics);
// wN=compute/wait/reduce gives each worker's own.
if parallel.plan.shardCount(batch: n) > 1 {
    let times = StepTimes(workers: parallel.workers)
    parallel.times = times
    let t = timeOnce(runTrainStep)
    parallel.times = nil
    let W = Double(parallel.workers), perStep = { (ns: UInt64) in String(format: "%.1f", Double(ns) / 1000 / Double(times.steps)) }
    let mean = { (f: (Int) -> UInt64) in UInt64(Double((0..<parallel.workers).reduce(UInt64(0)) { $0 + f($1) }) / W) }
    let each = (0..<parallel.workers).map { "w\($0)=\(perStep(times.compute($0)))/\(perStep(times.wait($0)))/\(perStep(times.reduce($0)))" }.joined(separator: " ")
    print("workers_profile workers=\(parallel.workers) shards=\(parallel.plan.shardCount(batch: n)) step_us=\(String(format: "%.1f", t * 1e6 / Double(steps))) compute_us=\(perStep(mean(times.compute))) wait_us=\(perStep(mean(times.wait))) reduce_us=\(perStep(mean(times.reduce))) serial_us=\(perStep(times.serial)) \(each)")
}

// Where the step's time goes, layer by layer (the unfused path: forward, loss, backward,
// then the optimizer over every parameter), `steps` steps after a warm-up, best of repeats:
//   layer index=I name=N forward_ms=... backward_ms=...   (per step)
//   layer name=loss ms=...   layer name=optimizer ms=...
// With --breakdown 1 (off by default: it times each layer separately, so the fused SGD
// update is not what runs here).
if opts["breakdown"]! != 0 {
    let L = net.layers.count
    var fwd = [Double](repeating: .infinity, count: L), bwd = fwd
    var lossTime = Double.infinity, optTime = Double.infinity
    let optimizer = optimizerSettings.make(Float.self)
    for r in 0...repeats {
        var f = [Double](repeating: 0, count: L), b = f, lt = 0.0, ot = 0.0
        for _ in 0..<steps {
            var h = x
            for (i, layer) in net.layers.enumerated() {
                let t0 = now()
                h = layer.forward(h, training: true)
                f[i] += now() - t0
            }
            var t0 = now()
            _ = net.loss.forwardBackward(logits: h, labels: labels)
            lt += now() - t0
            var g = net.loss.logitsGrad
            for i in stride(from: L - 1, through: 0, by: -1) {
                t0 = now()
                g = net.layers[i].backward(g)
                b[i] += now() - t0
            }
            t0 = now()
            optimizer.step(net.parameters)
            ot += now() - t0
        }
        guard r > 0 else { continue }  // the first round warms up
        for i in 0..<L { fwd[i] = min(fwd[i], f[i]); bwd[i] = min(bwd[i], b[i]) }
        lossTime = min(lossTime, lt)
        optTime = min(optTime, ot)
    }
    func ms(_ t: Double) -> String { String(format: "%.3f", 1000 * t / Double(steps)) }
    var productLayers = 0.0
    for (i, layer) in net.layers.enumerated() {
        var line = "layer index=\(i) name=\(String(describing: type(of: layer)).split(separator: "<").first ?? "?") width=\(layer.outFeatures) forward_ms=\(ms(fwd[i])) backward_ms=\(ms(bwd[i]))"
        if let conv = layer as? Conv2D<Float> { line += " kernels=\(conv.lastImplementation.replacingOccurrences(of: " ", with: "_"))" }
        if layer is Conv2D<Float> || layer is Dense<Float> { productLayers += fwd[i] + bwd[i] }
        print(line)
    }
    print("layer name=loss ms=\(ms(lossTime))")
    print("layer name=optimizer kind=\(optimizerSettings.kind.rawValue) ms=\(ms(optTime))")
    // The share of the step in the layers whose work is products (convolution and fc: their
    // products or oneDNN primitives, with bias, reorders and im2col), whatever runs them.
    let total = fwd.reduce(0, +) + bwd.reduce(0, +) + lossTime + optTime
    print("product_layers share=\(String(format: "%.3f", productLayers / total)) ms=\(ms(productLayers)) step_ms=\(ms(total))")
}

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

guard opts["shapes"]! != 0 else { exit(0) }
let sq = opts["square"]!
let A = randomMatrix(sq, sq), B = randomMatrix(sq, sq), C = Matrix<Float>(rows: sq, cols: sq)
let square = Shape(name: "square", tA: false, tB: false, m: sq, n: sq, k: sq, a: A, b: B, out: C)
let openblas = makeKernels(.fp32, .openblas)
let tsq = best { run(square, openblas) }
let squareFlops = 2 * Double(sq) * Double(sq) * Double(sq)
var squareLine = "gemm_square n=\(sq) gflops=\(String(format: "%.1f", squareFlops / tsq / 1e9))"
// The machine's measured peaks, one per kernel family (oneDNN float32 and bf16 when present).
if let dnnl {
    let onednn = makeKernels(.fp32, .onednn)
    squareLine += " onednn=\(String(format: "%.1f", squareFlops / best { run(square, onednn) } / 1e9))"
    if dnnl.hasBF16 {
        let bf16 = makeKernels(.bf16, .onednn)
        squareLine += " bf16=\(String(format: "%.1f", squareFlops / best { run(square, bf16) } / 1e9))"
    }
}
print(squareLine)

/// Best of 5 timings of 20,000 barriers and of 20,000 empty runs, for teams of 2 and 4.
func benchmarkBarrier() {
    let rounds = 20_000
    for workers in [2, 4] {
        for spins in [4000, 0] {
            guard let pool = WorkerPool(workers: workers, spins: spins) else {
                FileHandle_stderr("bnbench: error: cannot start \(workers) threads\n")
                exit(71)
            }
            var barrier = Double.infinity, run = Double.infinity
            for _ in 0..<5 {
                var t = now()
                pool.run { _ in for _ in 0..<rounds { pool.barrier() } }
                barrier = min(barrier, (now() - t) / Double(rounds))
                t = now()
                for _ in 0..<rounds { pool.run { _ in } }
                run = min(run, (now() - t) / Double(rounds))
            }
            print("barrier workers=\(workers) spins=\(spins) ns_per_barrier=\(Int(barrier * 1e9))")
            print("pool_run workers=\(workers) spins=\(spins) ns_per_run=\(Int(run * 1e9))")
        }
    }
}
