import CKernels
import RealModule

/// Updates parameters from the gradients the layers wrote. Layers know nothing of it.
///
/// Optimizers with state (momentum buffers, Adam's moments, the step count) keep it per
/// parameter, allocated once when first given the parameter list, so steps allocate nothing.
/// `state` exposes it as named tensors (`PARAM.momentum_buffer`, `PARAM.exp_avg`, ...; the
/// step count as `step`) so a checkpoint saves and restores it without knowing the optimizer.
public protocol Optimizer<T>: AnyObject {
    associatedtype T: BLASScalar
    var learningRate: T { get set }
    /// Applies one update to every parameter from its `grad`: `prepareStep`, then `update`
    /// of every element.
    func step(_ parameters: [Parameter<T>])
    /// The step's serial part: state allocated (first call), the step counted, its constants
    /// (Adam's bias corrections) computed.
    func prepareStep(_ parameters: [Parameter<T>])
    /// The step's element-wise part for `elements` of parameter `i`, after `prepareStep`. Any
    /// split of the elements into disjoint ranges, on any threads, gives `step`'s bits: every
    /// rule updates each element from that element alone.
    func update(_ parameters: [Parameter<T>], parameter i: Int, elements: Range<Int>)
    /// Named state tensors, in a fixed order (empty for plain SGD).
    func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])]
    /// Restores what `state` returned; throws naming the first tensor that is missing or of
    /// the wrong size.
    func load(state: [String: [T]], _ parameters: [Parameter<T>]) throws
}

extension Optimizer {
    @inlinable
    public func step(_ parameters: [Parameter<T>]) {
        prepareStep(parameters)
        for i in parameters.indices { update(parameters, parameter: i, elements: 0..<parameters[i].value.count) }
    }
}

/// A state tensor that does not fit (checkpoint loading).
public struct OptimizerStateError: Error, CustomStringConvertible, Equatable {
    public let message: String
    /// True when the tensor is missing or of another size: the file may be of another optimizer.
    public let doesNotFit: Bool
    public init(message: String, doesNotFit: Bool = false) {
        self.message = message
        self.doesNotFit = doesNotFit
    }
    public var description: String { message }
}

/// Which parameters weight decay applies to.
public enum WeightDecayScope: String, CaseIterable, Sendable {
    /// Every parameter, as torch.optim does with one parameter group (the default).
    case all
    /// The weights of linear maps only (fc matrices and conv kernels, `Parameter.Role.weight`):
    /// biases and normalisation gains and shifts are exempt (the usual practice for normalised
    /// nets; in PyTorch, two parameter groups).
    case weights
}

/// The settings of every optimizer bntrain has; each reads the ones it uses.
public struct OptimizerSettings: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable { case sgd, adam, adamw, rmsprop }
    public var kind = Kind.sgd
    public var learningRate = 0.01
    /// SGD and RMSprop momentum; 0 is none.
    public var momentum = 0.0
    public var nesterov = false
    public var beta1 = 0.9
    public var beta2 = 0.999
    /// Adam/AdamW/RMSprop epsilon.
    public var eps = 1e-8
    /// RMSprop smoothing of the squared-gradient average.
    public var alpha = 0.99
    public var weightDecay = 0.0
    public var decayScope = WeightDecayScope.all
    public init() {}

    /// Plain SGD: the update the training step may fold into the weight-gradient product.
    public var isPlainSGD: Bool { kind == .sgd && momentum == 0 && weightDecay == 0 }

    public func make<T: BLASScalar>(_: T.Type = T.self) -> any Optimizer<T> {
        switch kind {
        case .sgd:
            return isPlainSGD ? SGD<T>(learningRate: T(learningRate)) : MomentumSGD<T>(self)
        case .adam, .adamw: return Adam<T>(self)
        case .rmsprop: return RMSprop<T>(self)
        }
    }
}

/// Whether weight decay applies to `p` under `scope`, by the role its layer declared.
@inlinable
func decays<T>(_ p: Parameter<T>, _ scope: WeightDecayScope) -> Bool {
    scope == .all || p.role == .weight
}

/// Per-parameter buffers, allocated on first use for a parameter list and reused.
public final class SlotBuffers<T: BLASScalar> {
    public let names: [String]
    var buffers: [[UnsafeMutablePointer<T>]] = []
    var counts: [Int] = []
    public init(_ names: [String]) { self.names = names }

    /// Makes the buffers for `parameters` (zero-filled) unless they exist.
    func ensure(_ parameters: [Parameter<T>]) {
        guard counts.count != parameters.count else { return }
        for b in buffers { for p in b { p.deallocate() } }
        counts = parameters.map(\.value.count)
        buffers = counts.map { n in
            names.map { _ in
                let p = UnsafeMutablePointer<T>.allocate(capacity: max(n, 1))
                p.initialize(repeating: 0, count: max(n, 1))
                return p
            }
        }
    }

    deinit { for b in buffers { for p in b { p.deallocate() } } }

    func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])] {
        ensure(parameters)
        var out: [(String, [T])] = []
        for (i, p) in parameters.enumerated() {
            for (k, name) in names.enumerated() {
                // Logical (PyTorch) order, as the parameter itself is saved.
                let storage = UnsafePointer(buffers[i][k])
                out.append(("\(p.name).\(name)", [T](unsafeUninitializedCapacity: counts[i]) { dst, n in
                    p.copyToLogical(from: storage, to: dst.baseAddress!)
                    n = counts[i]
                }))
            }
        }
        return out
    }

    // Specialized: a checkpoint's moments are checked element by element, which unspecialized
    // generic code does through value witnesses.
    @_specialize(where T == Float)
    func load(_ state: [String: [T]], _ parameters: [Parameter<T>]) throws {
        ensure(parameters)
        for (i, p) in parameters.enumerated() {
            for (k, name) in names.enumerated() {
                let key = "\(p.name).\(name)"
                guard let v = state[key] else { throw OptimizerStateError(message: "optimizer state '\(key)' is missing", doesNotFit: true) }
                guard v.count == counts[i] else { throw OptimizerStateError(message: "optimizer state '\(key)' has \(v.count) values for a parameter of \(counts[i])", doesNotFit: true) }
                guard v.allSatisfy({ $0.isFinite }) else { throw OptimizerStateError(message: "optimizer state '\(key)' holds a non-finite value") }
                v.withUnsafeBufferPointer { p.copyFromLogical(from: $0.baseAddress!, to: buffers[i][k]) }
            }
        }
    }
}

/// Plain minibatch stochastic gradient descent: p <- p - lr * dL/dp (torch.optim.SGD with no
/// momentum, dampening or weight decay). Stateless.
public final class SGD<T: BLASScalar>: Optimizer {
    public var learningRate: T
    public init(learningRate: T) { self.learningRate = learningRate }

    public func prepareStep(_ parameters: [Parameter<T>]) {}

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func update(_ parameters: [Parameter<T>], parameter i: Int, elements r: Range<Int>) {
        let p = parameters[i]
        T.sgdUpdate(n: r.count, learningRate: learningRate, gradient: p.grad.data + r.lowerBound, weights: p.value.data + r.lowerBound)
    }

    public func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])] { [] }
    public func load(state: [String: [T]], _ parameters: [Parameter<T>]) throws {}
}

/// torch.optim.SGD with momentum mu, Nesterov and coupled weight decay wd (dampening 0):
///     g = grad + wd p
///     b = g (first step), else b = mu b + g
///     g = g + mu b (Nesterov), else g = b
///     p = p - lr g
/// With mu = 0 and wd > 0 it is SGD with L2 (no buffer is kept).
public final class MomentumSGD<T: BLASScalar>: Optimizer {
    public var learningRate: T
    let momentum: T, weightDecay: T, nesterov: Bool, scope: WeightDecayScope
    let slots = SlotBuffers<T>(["momentum_buffer"])
    /// Steps taken (the first initialises the buffers).
    public private(set) var steps = 0

    public init(_ s: OptimizerSettings) {
        learningRate = T(s.learningRate)
        momentum = T(s.momentum)
        weightDecay = T(s.weightDecay)
        nesterov = s.nesterov
        scope = s.decayScope
    }

    /// Whether the step being taken is the first (it initialises the buffers).
    var firstStep = false

    public func prepareStep(_ parameters: [Parameter<T>]) {
        slots.ensure(parameters)
        firstStep = steps == 0
        steps += 1
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func update(_ parameters: [Parameter<T>], parameter i: Int, elements r: Range<Int>) {
        let p = parameters[i], o = r.lowerBound, n = r.count
        let w = p.value.data + o, g = p.grad.data + o, b = slots.buffers[i][0] + o
        let wd = decays(p, scope) ? weightDecay : 0
        let mu = momentum, lr = learningRate, first = firstStep
        if T.self == Float.self {
            // C, vectorized; the loop below, rounded alike.
            bn_momentum_sgd_f32(float32Buffer(w), float32Buffer(g), mu != 0 ? float32Buffer(b) : nil, n, float32(wd), float32(mu), float32(lr), first ? 1 : 0, nesterov ? 1 : 0)
            return
        }
        for j in 0..<n {
            var d = g[j] + wd * w[j]
            if mu != 0 {
                b[j] = first ? d : mu * b[j] + d
                d = nesterov ? d + mu * b[j] : b[j]
            }
            w[j] -= lr * d
        }
    }

    public func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])] {
        momentum == 0 ? [("step", [T(steps)])] : [("step", [T(steps)])] + slots.state(parameters)
    }

    public func load(state: [String: [T]], _ parameters: [Parameter<T>]) throws {
        steps = try loadSteps(state)
        if momentum != 0 { try slots.load(state, parameters) }
    }
}

/// torch.optim.Adam (coupled L2: g = grad + wd p) and AdamW (decoupled: p = p (1 - lr wd)
/// before the Adam step), with t the step number from 1:
///     m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
///     p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
public final class Adam<T: BLASScalar>: Optimizer {
    public var learningRate: T
    let beta1: T, beta2: T, eps: T, weightDecay: T, decoupled: Bool, scope: WeightDecayScope
    let slots = SlotBuffers<T>(["exp_avg", "exp_avg_sq"])
    public private(set) var steps = 0

    public init(_ s: OptimizerSettings) {
        learningRate = T(s.learningRate)
        beta1 = T(s.beta1)
        beta2 = T(s.beta2)
        eps = T(s.eps)
        weightDecay = T(s.weightDecay)
        decoupled = s.kind == .adamw
        scope = s.decayScope
    }

    /// The step's bias-corrected step size and sqrt(1 - b2^t) (`prepareStep`).
    var stepSize: T = 0, bc2Sqrt: T = 1

    public func prepareStep(_ parameters: [Parameter<T>]) {
        slots.ensure(parameters)
        steps += 1
        let t = T(steps)
        let bc1 = 1 - T.pow(beta1, t), bc2 = 1 - T.pow(beta2, t)
        (stepSize, bc2Sqrt) = (learningRate / bc1, bc2.squareRoot())
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func update(_ parameters: [Parameter<T>], parameter i: Int, elements r: Range<Int>) {
        let (b1, b2, e, lr, stepSize, bc2Sqrt) = (beta1, beta2, eps, learningRate, stepSize, bc2Sqrt)
        let p = parameters[i], o = r.lowerBound, n = r.count
        let w = p.value.data + o, g = p.grad.data + o, m = slots.buffers[i][0] + o, v = slots.buffers[i][1] + o
        let wd = decays(p, scope) ? weightDecay : 0
        let coupled = decoupled ? 0 : wd, shrink = decoupled ? 1 - lr * wd : 1
        if T.self == Float.self {
            // C, vectorized (Swift's SIMD16 squareRoot() compiles to 16 scalar square
            // roots; docs/performance.md); the same expression, rounded alike (no contraction).
            bn_adam_f32(float32Buffer(w), float32Buffer(g), float32Buffer(m), float32Buffer(v), n, float32(coupled), float32(b1), float32(1 - b1), float32(b2), float32(1 - b2), float32(shrink), float32(stepSize), float32(bc2Sqrt), float32(e))
            return
        }
        for j in 0..<n {
            let d = g[j] + coupled * w[j]
            let mj = b1 * m[j] + (1 - b1) * d
            let vj = b2 * v[j] + (1 - b2) * d * d
            m[j] = mj
            v[j] = vj
            w[j] = w[j] * shrink - stepSize * mj / (vj.squareRoot() / bc2Sqrt + e)
        }
    }

    public func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])] { [("step", [T(steps)])] + slots.state(parameters) }

    public func load(state: [String: [T]], _ parameters: [Parameter<T>]) throws {
        steps = try loadSteps(state)
        try slots.load(state, parameters)
    }
}

/// torch.optim.RMSprop (not centred), with coupled weight decay:
///     g = grad + wd p,   v = alpha v + (1 - alpha) g^2
///     b = mu b + g / (sqrt(v) + eps),  p = p - lr b      (momentum mu > 0)
///     p = p - lr g / (sqrt(v) + eps)                       (mu = 0)
public final class RMSprop<T: BLASScalar>: Optimizer {
    public var learningRate: T
    let alpha: T, eps: T, momentum: T, weightDecay: T, scope: WeightDecayScope
    let slots: SlotBuffers<T>
    public private(set) var steps = 0

    public init(_ s: OptimizerSettings) {
        learningRate = T(s.learningRate)
        alpha = T(s.alpha)
        eps = T(s.eps)
        momentum = T(s.momentum)
        weightDecay = T(s.weightDecay)
        scope = s.decayScope
        slots = SlotBuffers(s.momentum == 0 ? ["square_avg"] : ["square_avg", "momentum_buffer"])
    }

    public func prepareStep(_ parameters: [Parameter<T>]) {
        slots.ensure(parameters)
        steps += 1
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func update(_ parameters: [Parameter<T>], parameter i: Int, elements r: Range<Int>) {
        let (a, e, mu, lr) = (alpha, eps, momentum, learningRate)
        let p = parameters[i], o = r.lowerBound, n = r.count
        let w = p.value.data + o, g = p.grad.data + o, v = slots.buffers[i][0] + o
        let wd = decays(p, scope) ? weightDecay : 0
        if T.self == Float.self {
            // C, vectorized (square roots); the loops below, rounded alike.
            bn_rmsprop_f32(float32Buffer(w), float32Buffer(g), float32Buffer(v), mu != 0 ? float32Buffer(slots.buffers[i][1] + o) : nil, n, float32(wd), float32(a), float32(1 - a), float32(mu), float32(lr), float32(e))
            return
        }
        if mu != 0 {
            let b = slots.buffers[i][1] + o
            for j in 0..<n {
                let d = g[j] + wd * w[j]
                v[j] = a * v[j] + (1 - a) * d * d
                b[j] = mu * b[j] + d / (v[j].squareRoot() + e)
                w[j] -= lr * b[j]
            }
        } else {
            for j in 0..<n {
                let d = g[j] + wd * w[j]
                v[j] = a * v[j] + (1 - a) * d * d
                w[j] -= lr * d / (v[j].squareRoot() + e)
            }
        }
    }

    public func state(_ parameters: [Parameter<T>]) -> [(name: String, values: [T])] { [("step", [T(steps)])] + slots.state(parameters) }

    public func load(state: [String: [T]], _ parameters: [Parameter<T>]) throws {
        steps = try loadSteps(state)
        try slots.load(state, parameters)
    }
}

/// The largest step count a checkpoint may restore: counted up from there, it stays exact.
public let maxOptimizerSteps = 1_000_000_000_000_000

/// The step count from a state dictionary: one integer from 0 to `maxOptimizerSteps`.
func loadSteps<T: BLASScalar>(_ state: [String: [T]]) throws -> Int {
    guard let v = state["step"], v.count == 1 else { throw OptimizerStateError(message: "optimizer state 'step' is missing", doesNotFit: true) }
    guard v[0] >= 0, v[0] <= T(maxOptimizerSteps), v[0] == v[0].rounded() else {
        throw OptimizerStateError(message: "optimizer state 'step' must be an integer from 0 to \(maxOptimizerSteps) (got \(v[0]))")
    }
    return Int(Double(v[0]))
}

/// Global L2 norm clipping, as torch.nn.utils.clip_grad_norm_: with n = sqrt(sum of every
/// gradient element squared), when n > maxNorm every gradient is scaled by maxNorm / (n + 1e-6).
/// Returns n.
@discardableResult
public func clipGradientNorm<T: BLASScalar>(_ parameters: [Parameter<T>], maxNorm: T) -> T {
    var sum: T = 0
    for p in parameters {
        let g = p.grad.data
        for j in 0..<p.grad.count { sum += g[j] * g[j] }
    }
    let norm = sum.squareRoot()
    let coef = maxNorm / (norm + 1e-6)
    if coef < 1 {
        for p in parameters {
            let g = p.grad.data
            for j in 0..<p.grad.count { g[j] *= coef }
        }
    }
    return norm
}
