// The hot-path histogram must scrape exactly as prom-client's own Histogram does for the same observations.
import t from 'tap'
import fc from 'fast-check'
import { Histogram, Registry } from 'prom-client'
import { BucketHistogram } from '../../src/bucket-histogram.js'

const NAME = 'test_duration_seconds'
const HELP = 'Test durations'
const LABEL_VALUES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'other', 'error']
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * The scrape's lines in a fixed order: prom-client lists label sets in the order first observed, this histogram by
 * label index.
 */
function sortedLines (scrape: string): string {
  return scrape.split('\n').sort().join('\n')
}

async function scrapeBoth (observations: Array<[number, number]>): Promise<[string, string]> {
  const reference = new Registry()
  const histogram = new Histogram({
    name: NAME,
    help: HELP,
    labelNames: ['status_class'],
    buckets: BUCKETS,
    registers: [reference]
  })
  const ours = new Registry()
  const bucketHistogram = new BucketHistogram(NAME, HELP, 'status_class', LABEL_VALUES, BUCKETS)
  ours.registerMetric(bucketHistogram.asMetric())
  for (const [labelIndex, value] of observations) {
    histogram.labels(LABEL_VALUES[labelIndex] as string).observe(value)
    bucketHistogram.observe(labelIndex, value)
  }
  return [sortedLines(await reference.metrics()), sortedLines(await ours.metrics())]
}

t.test("scrapes as prom-client's Histogram: bounds, +Inf, sum and count, only observed label values", async (t) => {
  const [reference, ours] = await scrapeBoth([
    [1, 0.001],
    [1, 0.005],
    [1, 0.0051],
    [3, 0.3],
    [6, 31],
    [1, 30],
    [0, 0]
  ])
  t.equal(ours, reference)
  t.match(
    ours,
    /test_duration_seconds_bucket\{le="0.005",status_class="2xx"\} 2\n/,
    'a value on a bound counts in that bucket'
  )
  t.match(ours, /test_duration_seconds_bucket\{le="\+Inf",status_class="error"\} 1\n/)
  t.notMatch(ours, /status_class="5xx"/, 'no series for a label value never observed')
})

t.test('any observations scrape alike (property)', async () => {
  const observation = fc.tuple(
    fc.integer({ min: 0, max: LABEL_VALUES.length - 1 }),
    fc.double({ min: 0, max: 100, noNaN: true })
  )
  await fc.assert(
    fc.asyncProperty(fc.array(observation, { maxLength: 50 }), async (observations) => {
      const [reference, ours] = await scrapeBoth(observations)
      return ours === reference
    }),
    { numRuns: 200 }
  )
})

t.test('reset empties every series; the registry resets it with the others', async (t) => {
  const registry = new Registry()
  const histogram = new BucketHistogram(NAME, HELP, 'status_class', LABEL_VALUES, BUCKETS)
  registry.registerMetric(histogram.asMetric())
  histogram.observe(1, 0.2)
  t.match(await registry.metrics(), /_count\{status_class="2xx"\} 1/)
  registry.resetMetrics()
  t.notMatch(await registry.metrics(), /_count/)
})
