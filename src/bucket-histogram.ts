// A Prometheus histogram over one label with a fixed set of values, counted in plain arrays: for the hot path.

import type { Metric } from 'prom-client'

interface Sample {
  metricName: string
  labels: Record<string, string | number>
  value: number
}

/**
 * prom-client's Histogram turns the label object into a hash string, validates it and converts the
 * bucket bound to a property name on every observe (its cost under load: docs/performance.md
 * table). Here an observation is an index and two array writes; the series are put
 * together only when scraped, in the shape prom-client's own Histogram gives to its Registry.
 */
export class BucketHistogram<Label extends string> {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #buckets: readonly number[]
  /** Per label value: one count per bucket and one past the last (+Inf), not cumulative. */
  readonly #counts: Float64Array
  readonly #sums: Float64Array

  constructor (
    readonly name: string,
    readonly help: string,
    readonly labelName: Label,
    readonly labelValues: readonly string[],
    buckets: readonly number[]
  ) {
    this.#buckets = [...buckets].sort((a, b) => a - b)
    this.#counts = new Float64Array(labelValues.length * (this.#buckets.length + 1))
    this.#sums = new Float64Array(labelValues.length)
  }

  /** Records one value for the label value at `labelIndex` in `labelValues`. */
  observe (labelIndex: number, value: number): void {
    const buckets = this.#buckets
    let bucket = 0
    while (bucket < buckets.length && value > (buckets[bucket] as number)) bucket++
    const index = labelIndex * (buckets.length + 1) + bucket
    this.#counts[index] = (this.#counts[index] as number) + 1
    this.#sums[labelIndex] = (this.#sums[labelIndex] as number) + value
  }

  /** As prom-client's Histogram: a series per label value observed at least once. */
  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: Sample[] }> {
    const values: Sample[] = []
    const width = this.#buckets.length + 1
    this.labelValues.forEach((labelValue, labelIndex) => {
      const counts = this.#counts.subarray(labelIndex * width, (labelIndex + 1) * width)
      const count = counts.reduce((sum, value) => sum + value, 0)
      if (count === 0) return
      let cumulative = 0
      this.#buckets.forEach((bound, bucket) => {
        cumulative += counts[bucket] as number
        values.push({ metricName: `${this.name}_bucket`, labels: { le: bound, [this.labelName]: labelValue }, value: cumulative })
      })
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', [this.labelName]: labelValue }, value: count })
      values.push({ metricName: `${this.name}_sum`, labels: { [this.labelName]: labelValue }, value: this.#sums[labelIndex] as number })
      values.push({ metricName: `${this.name}_count`, labels: { [this.labelName]: labelValue }, value: count })
    })
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset (): void {
    this.#counts.fill(0)
    this.#sums.fill(0)
  }

  /** prom-client's Registry reads a metric only through name, help, type, aggregator, get() and reset(). */
  asMetric (): Metric {
    return this as unknown as Metric
  }
}
