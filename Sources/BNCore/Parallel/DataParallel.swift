import Glibc

/// A normalisation layer whose training statistics are taken over the whole batch even when
/// the batch is split into shards (BatchNorm1D, BatchNorm2D). Its training forward runs in
/// three phases and its backward in two; between phases every shard's sums are reduced in
/// shard order (`DataParallel`). With one shard the phases compute what `forward` and
/// `backward` do.
public protocol ShardSynchronizedNormalization<T>: Layer {
    /// Per-channel statistics (features of a 1-D BN, channels of a 2-D BN).
    var channels: Int { get }
    var gamma: Parameter<T> { get }
    var beta: Parameter<T> { get }
    /// The state_dict prefix of the layer's tensors, its running statistics and their rules.
    var name: String { get }
    var runningMean: Buffer<T> { get }
    var runningVar: Buffer<T> { get }
    var runningVariance: BatchNorm1D<T>.RunningVariance { get }
    var eps: T { get }
    /// Batch renormalization's limits (nil: plain BN), and whether training uses the running
    /// statistics (`--bn-freeze-after`).
    var renorm: RenormLimits<T>? { get set }
    var frozen: Bool { get set }
    /// This shard's sums, written in phase 1 and 2 and read by every shard after a barrier.
    var shardSums: Matrix<T> { get }
    var shardSquares: Matrix<T> { get }
    /// This shard's own copies of the batch's reduced sums.
    var batchSumsA: Matrix<T> { get }
    var batchSumsB: Matrix<T> { get }
    var defersRunningStatistics: Bool { get set }
    /// The last training forward's statistics and the number of values behind them.
    var batchMeanValues: UnsafePointer<T> { get }
    var batchVarianceValues: UnsafePointer<T> { get }
    var statisticsRows: Int { get set }
    var batchesTracked: Int { get set }
    func updateRunningStatistics(mean: UnsafePointer<T>, variance: UnsafePointer<T>, count: Int)

    func syncForwardSums(_ x: Matrix<T>)
    func syncForwardDeviations(batchSums: UnsafePointer<T>, batchRows: Int)
    func syncForwardNormalize(batchSquares: UnsafePointer<T>) -> Matrix<T>
    func syncBackwardSums(_ dy: Matrix<T>)
    func syncBackwardInput(_ dy: Matrix<T>, batchSumDy: UnsafePointer<T>, batchSumDyXhat: UnsafePointer<T>) -> Matrix<T>
}

/// Fills rows of the batch a step is about to take (x and labels), so that each worker loads
/// its own shards' rows; disjoint ranges are loaded from several threads at once.
public protocol RowLoader: AnyObject {
    func loadRows(_ rows: Range<Int>)
}

/// How batch norm treats a batch that is split into shards.
public enum BatchNormSync: String, CaseIterable, Sendable {
    /// Statistics over the whole batch, combined from the shards in shard order: the numbers
    /// of one process computing the batch in shards.
    case on
    /// Each shard normalises with its own statistics: ghost batch norm (Hoffer et al. 2017)
    /// with the shard as the ghost batch. Running statistics are updated once per shard, in
    /// shard order, after the step.
    case off
}

/// Where a data-parallel step's time goes, summed over the steps timed (nanoseconds): per
/// worker, its shards' forward and backward (`compute`), waiting at barriers (`wait`) and its
/// slice of the gradient reduction and of the optimizer's update (`reduce`); and the serial part on the calling thread (the
/// dropout keys, clipping, the optimizer step, the running statistics).
public final class StepTimes {
    public let workers: Int
    public private(set) var steps = 0
    public var serial: UInt64 = 0
    let counters: UnsafeMutablePointer<UInt64>  // [worker][compute, wait, reduce]
    public init(workers: Int) {
        self.workers = workers
        counters = .allocate(capacity: workers * 3)
        counters.initialize(repeating: 0, count: workers * 3)
    }
    deinit { counters.deallocate() }
    public func compute(_ w: Int) -> UInt64 { counters[w * 3] }
    public func wait(_ w: Int) -> UInt64 { counters[w * 3 + 1] }
    public func reduce(_ w: Int) -> UInt64 { counters[w * 3 + 2] }
    @usableFromInline func add(_ w: Int, _ k: Int, _ ns: UInt64) { counters[w * 3 + k] &+= ns }
    func step() { steps += 1 }
    @usableFromInline static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }
}

/// Data-parallel training of one model: every minibatch is cut into the canonical shards of
/// a `ShardPlan`, each shard is computed by one replica of the network, and the shards'
/// gradients are reduced in shard order before one optimizer step on the model. Which worker
/// computes a shard never changes a bit, so `workers` only changes the speed
/// (docs/parallel.md).
///
/// A batch of one shard takes the model's own `trainStep` (with plain SGD's fused update), the
/// arithmetic of an unsharded run.
public final class DataParallel<T: BLASScalar>: WorkerTask {
    /// Slot 0's network: what the optimizer, checkpoints, traces and evaluation use.
    public let model: Network<T>
    /// The MPI job this process is a rank of, if any: it computes its block of each batch's
    /// shards and receives the others' per-shard results (`exchange`).
    public let ranks: Ranks?
    /// Send and receive buffers of the all-gathers, and per remote (slot, fc layer) the x and
    /// dz received from the rank that computed that shard.
    var sendBuffer: UnsafeMutableRawPointer?
    var receiveBuffer: UnsafeMutableRawPointer?
    var remoteX: [[Matrix<T>]] = []
    var remoteDz: [[Matrix<T>]] = []
    var remoteXView: [[Matrix<T>]] = []
    /// Under MPI, a stop request (a signal number, 0 for none) that this rank sends with every
    /// step, and the first one any rank sent with the last step: every rank learns of a
    /// signal after the same step, so all stop at the same step boundary.
    public var localStopSignal: Int32 = 0
    public private(set) var jobStopSignal: Int32 = 0
    /// Bytes of one shard's results after backward (`shardPacketBytes`), 0 without MPI.
    var packetBytes = 0
    var remoteDzView: [[Matrix<T>]] = []
    public let plan: ShardPlan
    public let workers: Int
    public let batchNormSync: BatchNormSync
    /// Ghost batch norm over groups of this many consecutive shards (their statistics
    /// combined in shard order); 0 is the whole batch. `batchNormSync` off is 1.
    public let ghostShards: Int
    /// One per shard slot; slots[0] is the model.
    let slots: [Slot]
    let pool: WorkerPool?
    /// Indices of the layers that synchronise across shards (none when `batchNormSync` is off,
    /// or the layers are frozen).
    var syncLayers: [Int]
    /// Whether BN layers train with their running statistics (`setBatchNormFrozen`).
    public private(set) var batchNormFrozen = false
    /// Every BN layer (1-D and 2-D), for the running statistics applied after a step.
    let normLayers: [Int]
    /// Per fully connected layer, that layer in every slot, and the index of its weight in
    /// `model.parameters`. Its dW is never reduced: each worker computes its share of dW's
    /// storage rows (`rowsOfWorker[layer][worker]`) from every shard's x and dz, as one fused
    /// multiply-add chain per element over the batch (`Dense.weightGradient(rows:)`), whose
    /// bits do not depend on the split.
    let denseBySlot: [[Dense<T>]]
    let denseWeight: [Int]
    let rowsOfWorker: [[Range<Int>]]
    /// The parameters whose shard gradients are reduced (all but the fc weights).
    let reduced: [Int]
    /// Per parameter, pointers to slots 1... gradients (the shards after the first).
    let gradientPointers: [UnsafeMutableBufferPointer<UnsafePointer<T>?>]
    /// Per sync layer and quantity, pointers to every slot's shard sums.
    let sumPointers: [[UnsafeMutableBufferPointer<UnsafePointer<T>?>]]

    final class Slot {
        let net: Network<T>
        let input: Matrix<T>  // a view of the shard's rows of the batch
        var h: Matrix<T>
        var lossSum = 0.0
        let norms: [any ShardSynchronizedNormalization<T>]  // by network layer index order of normLayers
        init(net: Network<T>, norms: [any ShardSynchronizedNormalization<T>]) {
            self.net = net
            input = Matrix(viewOf: Matrix<T>(rows: 0, cols: net.inputFeatures))
            h = input
            self.norms = norms
        }
    }

    /// When set, every sharded step adds where its time went (`bnbench --workers`).
    public var times: StepTimes?

    // The step's shape, set before the workers run.
    var stepOptimizer: (any Optimizer<T>)?
    var loader: (any RowLoader)?
    var batchRows = 0
    var shardCount = 0
    var labels: UnsafePointer<Int32>?

    /// `replicas`: networks of the model's spec and options, one fewer than the most shards a
    /// batch will have (`plan.shardCount(batch:) - 1`); they are made to share the model's
    /// storage. `setup(worker)` runs on each worker thread once (single-threaded kernels).
    ///
    /// `ghostShards`: with `batchNormSync` on, BN statistics over consecutive groups of this
    /// many shards (ghost batch norm with ghost batches of `ghostShards * plan.shardSize`
    /// rows); 0 is the whole batch.
    public init?(model: Network<T>, replicas: [Network<T>], plan: ShardPlan, workers: Int, batchNormSync: BatchNormSync, ghostShards: Int = 0, ranks: Ranks? = nil, setup: @escaping (Int) -> Void = { _ in }) {
        precondition(ghostShards >= 0, "ghost groups of at least one shard")
        precondition(workers >= 1, "at least one worker")
        self.model = model
        self.ranks = ranks.flatMap { $0.count > 1 ? $0 : nil }
        self.plan = plan
        self.batchNormSync = ghostShards == 1 ? .off : batchNormSync
        self.ghostShards = batchNormSync == .off ? 1 : ghostShards
        let nets = [model] + replicas
        for r in replicas { r.shareState(with: model) }
        let norms = model.layers.indices.filter { model.layers[$0] is any ShardSynchronizedNormalization<T> }
        normLayers = norms
        syncLayers = self.batchNormSync == .on ? norms : []
        // Fully connected weights: dW by rows, each worker its share, over every shard.
        let dense = model.layers.indices.filter { model.layers[$0] is Dense<T> }
        let bySlot = dense.map { i in nets.map { $0.layers[i] as! Dense<T> } }
        let weights = bySlot.map { d in model.parameters.firstIndex { $0 === d[0].weight }! }
        denseBySlot = bySlot
        denseWeight = weights
        reduced = model.parameters.indices.filter { !weights.contains($0) }
        slots = nets.map { net in Slot(net: net, norms: norms.map { net.layers[$0] as! any ShardSynchronizedNormalization<T> }) }
        for d in bySlot { for layer in d.dropFirst() { layer.defersWeightGradient = true } }
        // Replicas never update the shared running statistics themselves.
        for s in slots.dropFirst() { for i in s.norms.indices { s.norms[i].defersRunningStatistics = true } }
        gradientPointers = model.parameters.indices.map { p in
            let b = UnsafeMutableBufferPointer<UnsafePointer<T>?>.allocate(capacity: max(nets.count - 1, 1))
            for (k, net) in nets.dropFirst().enumerated() { b[k] = UnsafePointer(net.parameters[p].grad.data) }
            return b
        }
        let slotNorms = slots.map(\.norms)
        sumPointers = norms.indices.map { l in
            (0..<4).map { q in
                let b = UnsafeMutableBufferPointer<UnsafePointer<T>?>.allocate(capacity: nets.count)
                for (k, norms) in slotNorms.enumerated() {
                    let n = norms[l]
                    let m: Matrix<T> = [n.shardSums, n.shardSquares, n.beta.grad, n.gamma.grad][q]
                    b[k] = UnsafePointer(m.data)
                }
                return b
            }
        }
        let team = min(workers, nets.count)
        self.workers = team
        // Each worker an equal share of every layer's rows (which worker computes a row never
        // changes its bits).
        rowsOfWorker = bySlot.map { d in (0..<team).map { ShardPlan.shards(forWorker: $0, of: team, shardCount: d[0].weightGradientRows) } }
        if let ranks = self.ranks {
            let per = (nets.count + ranks.count - 1) / ranks.count
            packetBytes = Self.shardPacketBytes(slots[0], denseBySlot.map { $0[0] }, reduced: reduced.map { model.parameters[$0].grad.count }, shardSize: plan.shardSize)
            let bytes = per * packetBytes
            sendBuffer = .allocate(byteCount: max(bytes, 16), alignment: 64)
            receiveBuffer = .allocate(byteCount: max(bytes * ranks.count, 16), alignment: 64)
            remoteX = bySlot.map { d in d.map { Matrix<T>(rows: plan.shardSize, cols: $0.inFeatures) } }
            remoteDz = bySlot.map { d in d.map { Matrix<T>(rows: plan.shardSize, cols: $0.outFeatures) } }
            remoteXView = remoteX.map { $0.map { Matrix(viewOf: $0) } }
            remoteDzView = remoteDz.map { $0.map { Matrix(viewOf: $0) } }
        }
        if team > 1 {
            guard let p = WorkerPool(workers: team, setup: setup) else { return nil }
            pool = p
        } else {
            pool = nil
        }
    }

    deinit {
        sendBuffer?.deallocate()
        receiveBuffer?.deallocate()
        for b in gradientPointers { b.deallocate() }
        for l in sumPointers { for b in l { b.deallocate() } }
    }

    /// The most rows a step can take: one full shard per slot.
    public var capacity: Int { slots.count * plan.shardSize }

    /// One training step on x: (B, inputs), B <= `capacity`. Returns the batch's mean loss
    /// (before the update): the shards' loss sums added in shard order, divided by B.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    ///
    /// `loader`: fills rows of x and labels (each worker its own shards' rows, before it reads
    /// them), when the caller leaves the batch's loading to the workers.
    public func trainStep(_ x: Matrix<T>, labels: UnsafePointer<Int32>, optimizer: any Optimizer<T>, clipNorm: T? = nil, loader: (any RowLoader)? = nil) -> Double {
        let n = x.rows, k = plan.shardCount(batch: n)
        precondition(k >= 1 && k <= slots.count, "a batch of \(n) rows needs \(k) shards; this step has \(slots.count)")
        defer { agreeOnStop() }
        if k == 1 {
            loader?.loadRows(0..<n)
            for d in denseBySlot { d[0].defersWeightGradient = false }
            for i in slots[0].norms.indices { slots[0].norms[i].defersRunningStatistics = false }
            return model.trainStep(x, labels: labels, optimizer: optimizer, clipNorm: clipNorm)
        }
        let started = times != nil ? StepTimes.now() : 0
        for i in slots[0].norms.indices { slots[0].norms[i].defersRunningStatistics = true }
        for d in denseBySlot { d[0].defersWeightGradient = true }
        (batchRows, shardCount, self.labels) = (n, k, labels)
        // Each shard's dropout stream: keyed by the model's stream (one draw per step) and the shard.
        let key = model.randomStream.generator.next()
        // Slot 0's network is the model: its stream serves shard 0 during the step and is put
        // back after it, so the model's stream advances by exactly one draw per step whichever
        // process computed shard 0.
        let modelStream = model.randomStream.generator
        for s in 0..<k {
            var g = SplitMix64(seed: key ^ (UInt64(s + 1) &* 0x9E37_79B9_7F4A_7C15))
            _ = g.next()
            slots[s].net.randomStream.generator = g
            let r = plan.rows(ofShard: s, batch: n)
            slots[s].input.view(of: x, row: r.lowerBound, rows: r.count)
        }
        // Without clipping (which needs the reduced gradient's global norm first), each worker
        // updates the elements it has just reduced: the optimizer's element-wise part runs
        // split across the workers, with `step`'s bits.
        stepOptimizer = clipNorm == nil ? optimizer : nil
        stepOptimizer?.prepareStep(model.parameters)
        let parallelStart = times != nil ? StepTimes.now() : 0
        self.loader = loader
        if let pool { pool.run(self) } else { work(worker: 0, of: 1) }
        self.loader = nil
        model.randomStream.generator = modelStream
        let parallelEnd = times != nil ? StepTimes.now() : 0
        defer {
            if let t = times {
                t.serial &+= (parallelStart - started) &+ (StepTimes.now() - parallelEnd)
                t.step()
            }
        }
        if let c = clipNorm {
            clipGradientNorm(model.parameters, maxNorm: c)
            optimizer.step(model.parameters)
        }
        stepOptimizer = nil
        applyRunningStatistics()
        var total = 0.0
        for s in 0..<k { total += slots[s].lossSum }
        return total / Double(n)
    }

    /// Every BN layer of every slot trains with its running statistics (true) or its batch's.
    public func setBatchNormFrozen(_ frozen: Bool) {
        batchNormFrozen = frozen
        for slot in slots { for i in slot.norms.indices { slot.norms[i].frozen = frozen } }
        syncLayers = batchNormSync == .on && !frozen ? normLayers : []
    }

    /// Batch renormalization's limits in every BN layer of every slot (nil: plain BN).
    public func setRenormLimits(_ limits: RenormLimits<T>?) {
        for slot in slots { for i in slot.norms.indices { slot.norms[i].renorm = limits } }
    }

    /// The running statistics, after the step: once from the batch's statistics (synchronised),
    /// or once per shard in shard order from each shard's own (ghost BN).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func applyRunningStatistics() {
        guard !batchNormFrozen else { return }
        let model = slots[0].norms
        for l in model.indices {
            switch batchNormSync {
            case .on:
                // Each group's statistics (the batch's, or each ghost batch's, in order), from
                // its first shard (every shard of a group has the same): computed here or,
                // under MPI, received with that shard.
                var s = 0
                while s < shardCount {
                    let first = slots[s].norms[l]
                    model[l].updateRunningStatistics(mean: first.batchMeanValues, variance: first.batchVarianceValues, count: first.statisticsRows)
                    s = group(of: s, k: shardCount).upperBound
                }
            case .off:
                for s in 0..<shardCount {
                    let shard = slots[s].norms[l]
                    model[l].updateRunningStatistics(mean: shard.batchMeanValues, variance: shard.batchVarianceValues, count: shard.statisticsRows)
                }
            }
        }
    }

    /// Worker w's part of a step: its block of shards forward (phase by phase at every
    /// synchronised layer), loss and backward, then its slice of the gradient reduction.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func work(worker w: Int, of team: Int) {
        let times = self.times, pool = self.pool, loader = self.loader
        let begun = times != nil ? StepTimes.now() : 0
        func barrier() {
            guard let pool else { return }
            guard let times else { return pool.barrier() }
            let t = StepTimes.now()
            pool.barrier()
            times.add(w, 1, StepTimes.now() - t)
        }
        let waitBefore = times?.wait(w) ?? 0
        // This rank's block of the shards, divided among its workers.
        let block = rankShards(shardCount), local = ShardPlan.shards(forWorker: w, of: team, shardCount: block.count)
        let mine = (block.lowerBound + local.lowerBound)..<(block.lowerBound + local.upperBound)
        let n = batchRows, k = shardCount
        let layerCount = model.layers.count
        for s in mine {
            loader?.loadRows(plan.rows(ofShard: s, batch: n))
            slots[s].h = slots[s].input
        }
        var start = 0
        for (l, layer) in syncLayers.enumerated() {
            for s in mine {
                let slot = slots[s]
                slot.h = slot.net.forward(slot.h, layers: start..<layer)
                slot.norms[l].syncForwardSums(slot.h)
            }
            barrier()
            exchangeSums(l, 0..<1, k: k, worker: w, barrier: barrier)
            for s in mine {
                let norm = slots[s].norms[l], g = group(of: s, k: k)
                reduce(sumPointers[l][0], g, channels: norm.channels, into: norm.batchSumsA.data)
                norm.syncForwardDeviations(batchSums: norm.batchSumsA.data, batchRows: groupRows(g, batch: n))
            }
            barrier()
            exchangeSums(l, 1..<2, k: k, worker: w, barrier: barrier)
            for s in mine {
                let norm = slots[s].norms[l]
                reduce(sumPointers[l][1], group(of: s, k: k), channels: norm.channels, into: norm.batchSumsB.data)
                slots[s].h = norm.syncForwardNormalize(batchSquares: norm.batchSumsB.data)
            }
            start = layer + 1
        }
        for s in mine {
            let slot = slots[s], rows = plan.rows(ofShard: s, batch: n)
            let logits = slot.net.forward(slot.h, layers: start..<layerCount)
            slot.lossSum = slot.net.loss.forwardBackwardSum(logits: logits, labels: labels! + rows.lowerBound, batchRows: n)
            slot.h = slot.net.loss.logitsGrad
        }
        var end = layerCount
        for (l, layer) in syncLayers.enumerated().reversed() {
            for s in mine {
                let slot = slots[s]
                slot.h = slot.net.backward(slot.h, layers: (layer + 1)..<end)
                slot.norms[l].syncBackwardSums(slot.h)
            }
            barrier()
            exchangeSums(l, 2..<4, k: k, worker: w, barrier: barrier)
            for s in mine {
                let slot = slots[s], norm = slot.norms[l], g = group(of: s, k: k)
                reduce(sumPointers[l][2], g, channels: norm.channels, into: norm.batchSumsA.data)
                reduce(sumPointers[l][3], g, channels: norm.channels, into: norm.batchSumsB.data)
                slot.h = norm.syncBackwardInput(slot.h, batchSumDy: norm.batchSumsA.data, batchSumDyXhat: norm.batchSumsB.data)
            }
            end = layer
        }
        for s in mine { slots[s].h = slots[s].net.backward(slots[s].h, layers: 0..<end) }
        barrier()
        if ranks != nil {
            if w == 0 { exchange(k, bytes: packetBytes, pack: { packShard($0, $1) }, unpack: { unpackShard($0, $1) }) }
            barrier()
        }
        // grad(slot 0) += grad(slot 1), grad(slot 2), ... in shard order, this worker's slice.
        let reduceStart = times != nil ? StepTimes.now() : 0
        let params = model.parameters
        for p in reduced {
            let target = params[p].grad
            let range = ShardPlan.slice(forWorker: w, of: team, count: target.count)
            ShardReduction.accumulate(into: target.data, shards: UnsafeBufferPointer(rebasing: gradientPointers[p][0..<(k - 1)]), range: range)
            if let opt = stepOptimizer, !range.isEmpty { opt.update(params, parameter: p, elements: range) }
        }
        // fc weights: this worker's rows of dW from every shard's x and dz, the chain continued
        // shard by shard in shard order; then their update.
        for (d, layers) in denseBySlot.enumerated() {
            let rows = rowsOfWorker[d][w]
            guard !rows.isEmpty else { continue }
            let p = denseWeight[d], cols = params[p].value.cols, first = rows.lowerBound * cols
            let target = params[p].grad.data + first
            for s in 0..<k { layers[s].weightGradient(rows: rows, into: target, accumulate: s > 0) }
            stepOptimizer?.update(params, parameter: p, elements: first..<(first + rows.count * cols))
        }
        if let times {
            let end = StepTimes.now()
            times.add(w, 2, end - reduceStart)
            times.add(w, 0, (reduceStart - begun) - (times.wait(w) - waitBefore))
        }
    }

    // MARK: Several processes (MPI ranks)

    /// Every rank's `localStopSignal`, all-gathered after each step; the first nonzero one (in
    /// rank order) becomes `jobStopSignal`.
    func agreeOnStop() {
        guard let ranks, let send = sendBuffer, let receive = receiveBuffer else { return }
        send.storeBytes(of: Int64(localStopSignal), as: Int64.self)
        ranks.allGather(send, bytes: 8, into: receive)
        for r in 0..<ranks.count {
            let v = receive.load(fromByteOffset: 8 * r, as: Int64.self)
            if v != 0 {
                jobStopSignal = Int32(truncatingIfNeeded: v)
                return
            }
        }
    }

    /// Under MPI (worker 0, then a barrier): the other ranks' shards' per-channel sums of sync
    /// layer l, quantities `qs` of `sumPointers` (0 the sums, 1 the squared deviations, 2 and
    /// 3 backward's sums), received into their slots. Nothing without MPI.
    func exchangeSums(_ l: Int, _ qs: Range<Int>, k: Int, worker w: Int, barrier: () -> Void) {
        guard ranks != nil else { return }
        if w == 0 {
            let c = slots[0].norms[l].channels * MemoryLayout<T>.stride, pointers = sumPointers[l]
            exchange(k, bytes: qs.count * c, pack: { s, at in
                for (i, q) in qs.enumerated() { (at + i * c).copyMemory(from: pointers[q][s]!, byteCount: c) }
            }, unpack: { s, from in
                for (i, q) in qs.enumerated() { UnsafeMutableRawPointer(mutating: pointers[q][s]!).copyMemory(from: from + i * c, byteCount: c) }
            })
        }
        barrier()
    }

    /// The rank's block of a batch's k shards (all of them without MPI).
    func rankShards(_ k: Int) -> Range<Int> {
        guard let ranks else { return 0..<k }
        return ShardPlan.shards(forWorker: ranks.rank, of: ranks.count, shardCount: k)
    }

    /// Bytes of one shard's results after backward: its loss sum, its gradients of the reduced
    /// parameters, every fc layer's x and dz (S rows each), and each BN layer's mean, variance
    /// and row count (the shard's own with ghost BN, else the batch's, for a rank that computed
    /// no shard). At least a BN phase's sums (2 x channels).
    static func shardPacketBytes(_ slot: Slot, _ dense: [Dense<T>], reduced: [Int], shardSize: Int) -> Int {
        let t = MemoryLayout<T>.stride
        var n = 8 + reduced.reduce(0, +) * t
        for d in dense { n += shardSize * (d.inFeatures + d.outFeatures) * t }
        for norm in slot.norms { n += 2 * norm.channels * t + 8 }
        let sums = slot.norms.map { 2 * $0.channels * t }.max() ?? 0
        return (max(n, sums) + 7) / 8 * 8
    }


    /// Worker 0 only, between barriers: each of this rank's shards packed (`bytes` each), all
    /// ranks' packs all-gathered, and the other ranks' shards unpacked into their slots. After
    /// it every rank holds every shard's values, and reduces them in shard order.
    func exchange(_ k: Int, bytes: Int, pack: (Int, UnsafeMutableRawPointer) -> Void, unpack: (Int, UnsafeRawPointer) -> Void) {
        guard let ranks, let send = sendBuffer, let receive = receiveBuffer else { return }
        let per = (k + ranks.count - 1) / ranks.count, stride = (bytes + 7) / 8 * 8
        for (i, s) in rankShards(k).enumerated() { pack(s, send + i * stride) }
        ranks.allGather(send, bytes: per * stride, into: receive)
        for r in 0..<ranks.count where r != ranks.rank {
            for (i, s) in ShardPlan.shards(forWorker: r, of: ranks.count, shardCount: k).enumerated() { unpack(s, receive + (r * per + i) * stride) }
        }
    }

    func packShard(_ s: Int, _ at: UnsafeMutableRawPointer) {
        let t = MemoryLayout<T>.stride, slot = slots[s], rows = plan.rows(ofShard: s, batch: batchRows).count
        var at = at
        at.storeBytes(of: slot.lossSum, as: Double.self)
        at += 8
        for p in reduced {
            let g = slot.net.parameters[p].grad
            at.copyMemory(from: g.data, byteCount: g.count * t)
            at += g.count * t
        }
        for layers in denseBySlot {
            let d = layers[s]
            at.copyMemory(from: d.input!.data, byteCount: rows * d.inFeatures * t)
            at += plan.shardSize * d.inFeatures * t
            at.copyMemory(from: d.lastPreActivationGrad!.data, byteCount: rows * d.outFeatures * t)
            at += plan.shardSize * d.outFeatures * t
        }
        do {
            for norm in slot.norms {
                at.copyMemory(from: norm.batchMeanValues, byteCount: norm.channels * t)
                (at + norm.channels * t).copyMemory(from: norm.batchVarianceValues, byteCount: norm.channels * t)
                at += 2 * norm.channels * t
                at.storeBytes(of: norm.statisticsRows, as: Int.self)
                at += 8
            }
        }
    }

    func unpackShard(_ s: Int, _ from: UnsafeRawPointer) {
        let t = MemoryLayout<T>.stride, slot = slots[s], rows = plan.rows(ofShard: s, batch: batchRows).count
        var from = from
        slot.lossSum = from.loadUnaligned(as: Double.self)
        from += 8
        for p in reduced {
            let g = slot.net.parameters[p].grad
            UnsafeMutableRawPointer(g.data).copyMemory(from: from, byteCount: g.count * t)
            from += g.count * t
        }
        for (di, layers) in denseBySlot.enumerated() {
            let d = layers[s], x = remoteX[di][s], dz = remoteDz[di][s]
            UnsafeMutableRawPointer(x.data).copyMemory(from: from, byteCount: rows * d.inFeatures * t)
            from += plan.shardSize * d.inFeatures * t
            UnsafeMutableRawPointer(dz.data).copyMemory(from: from, byteCount: rows * d.outFeatures * t)
            from += plan.shardSize * d.outFeatures * t
            remoteXView[di][s].view(of: x, row: 0, rows: rows)
            remoteDzView[di][s].view(of: dz, row: 0, rows: rows)
            d.input = remoteXView[di][s]
            d.lastPreActivationGrad = remoteDzView[di][s]
        }
        do {
            for i in slot.norms.indices {
                let norm = slot.norms[i]
                UnsafeMutableRawPointer(mutating: norm.batchMeanValues).copyMemory(from: from, byteCount: norm.channels * t)
                UnsafeMutableRawPointer(mutating: norm.batchVarianceValues).copyMemory(from: from + norm.channels * t, byteCount: norm.channels * t)
                from += 2 * norm.channels * t
                slot.norms[i].statisticsRows = from.loadUnaligned(as: Int.self)
                from += 8
            }
        }
    }

    /// Runs `body(worker, workers)` once on every worker, the caller as worker 0 (evaluation
    /// passes divided among the workers).
    public func onEveryWorker(_ body: (Int, Int) -> Void) {
        if let pool { pool.run { w in body(w, pool.count) } } else { body(0, 1) }
    }

    /// Worker w's own network for forward passes outside a step (a replica sharing the model's
    /// weights; worker 0's is the model).
    public func network(forWorker w: Int) -> Network<T> { slots[w].net }

    /// The shards whose statistics shard s shares: the whole batch's k, or its ghost group.
    @inlinable
    func group(of s: Int, k: Int) -> Range<Int> {
        guard ghostShards > 0 else { return 0..<k }
        let lo = s / ghostShards * ghostShards
        return lo..<min(lo + ghostShards, k)
    }

    /// Rows of the batch in shards `g`.
    func groupRows(_ g: Range<Int>, batch n: Int) -> Int {
        plan.rows(ofShard: g.upperBound - 1, batch: n).upperBound - plan.rows(ofShard: g.lowerBound, batch: n).lowerBound
    }

    /// out = s_lo + s_lo+1 + ... over shards `g`, element by element in shard order.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func reduce(_ shards: UnsafeMutableBufferPointer<UnsafePointer<T>?>, _ g: Range<Int>, channels: Int, into out: UnsafeMutablePointer<T>) {
        out.update(from: shards[g.lowerBound]!, count: channels)
        ShardReduction.accumulate(into: out, shards: UnsafeBufferPointer(rebasing: shards[(g.lowerBound + 1)..<g.upperBound]), range: 0..<channels)
    }
}
