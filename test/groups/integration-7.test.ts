// One test process for the files of the group "integration-7" (test/helpers/test-groups.ts says why).
import { runGroup } from '../helpers/test-groups.js'

await runGroup('integration-7', import.meta.url)
