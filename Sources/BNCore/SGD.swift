/// Plain minibatch stochastic gradient descent: p <- p - lr * dL/dp.
public struct SGD<T: BLASScalar> {
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
