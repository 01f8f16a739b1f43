/// The grammar conv and pooling tokens share: a name, a first number, then letters each
/// followed by a number (`conv6k5p2`, `maxpool3s2`).
enum ImageToken {
    /// The first number and the lettered ones of `token` after `name`, or a `LayerKindError`
    /// with `usage` when the token does not follow the grammar.
    static func parse(_ token: String, name: String, usage: String) throws -> (first: Int, values: [Character: Int]) {
        var rest = Substring(token.dropFirst(name.count))
        func number() -> Int? {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(digits.count)
            return digits.isEmpty || digits.count > 7 ? nil : Int(digits)
        }
        guard let first = number(), first >= 1 else { throw LayerKindError(usage) }
        var values: [Character: Int] = [:]
        while let letter = rest.first {
            rest = rest.dropFirst()
            guard "ksp".contains(letter), values[letter] == nil, let v = number() else { throw LayerKindError(usage) }
            values[letter] = v
        }
        return (first, values)
    }

    /// The image an image layer receives, or the error for a feature vector.
    static func image(_ input: ModelSpec.Shape) throws -> ImageShape {
        guard case let .image(s) = input else { throw LayerKindError("needs an image input; image layers must come before the first fc") }
        return s
    }
}
