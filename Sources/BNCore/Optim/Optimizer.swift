/// Updates parameters from the gradients the layers wrote. Layers know nothing of it.
///
/// Optimizers with state (momentum, Adam's moments) keep it per parameter, in the order of the
/// parameter list they are given; `state` exposes it as named tensors so that a checkpoint can
/// save and restore it without knowing the optimizer.
public protocol Optimizer<T>: AnyObject {
    associatedtype T: BLASScalar
    var learningRate: T { get set }
    /// Applies one update to every parameter from its `grad`.
    func step(_ parameters: [Parameter<T>])
}

/// Plain minibatch stochastic gradient descent: p <- p - lr * dL/dp (torch.optim.SGD with no
/// momentum, dampening or weight decay). Stateless.
public final class SGD<T: BLASScalar>: Optimizer {
    public var learningRate: T
    public init(learningRate: T) { self.learningRate = learningRate }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func step(_ parameters: [Parameter<T>]) {
        for p in parameters {
            T.axpy(n: p.value.count, alpha: -learningRate, x: p.grad.data, y: p.value.data)
        }
    }
}
