// The evaluation-text protocol: WikiText rows joined as the HF dataset does.
#include "runner/data/text.h"

#include <gtest/gtest.h>

#include <fstream>

#include "solvers/error.h"
#include "tests/test_util.h"

namespace {

TEST(Text, HfRowsJoinKeepsNewlinesAndEmptiesBlankRows) {
  // Raw lines " = T = \n", " \n", " a b\n" are rows " = T = \n", "", " a b\n".
  EXPECT_EQ(rotq::hf_rows_joined(" = T = \n \n a b\n"), " = T = \n\n\n\n\n a b\n");
  EXPECT_EQ(rotq::hf_rows_joined("x"), "x");
  EXPECT_EQ(rotq::hf_rows_joined(" \n"), "");
}

TEST(Text, WikiTextTestSplitHasTheDatasetsRowCount) {
  const std::string raw =
      rotq::read_file_bytes(rotq_test::shared_data("text/wikitext-2-raw/wiki.test.raw"));
  const std::string joined = rotq::hf_rows_joined(raw);
  // HF's wikitext-2-raw-v1 test split has 4358 rows: 4357 separators.
  size_t seps = 0;
  for (size_t p = 0; (p = joined.find("\n\n", p)) != std::string::npos;) {
    ++seps;
    p += 2;
  }
  EXPECT_GE(seps, 4357u);
  EXPECT_EQ(joined.substr(0, 25), "\n\n = Robert Boulter = \n\n\n");
}

TEST(Text, AutoFormatRecognizesWikiText) {
  using rotq::TextFormat;
  EXPECT_EQ(rotq::resolve_text_format(TextFormat::kAuto, "/x/wiki.test.raw"), TextFormat::kHfRows);
  EXPECT_EQ(rotq::resolve_text_format(TextFormat::kAuto, "/x/wikitext2.txt"), TextFormat::kHfRows);
  EXPECT_EQ(rotq::resolve_text_format(TextFormat::kAuto, "/x/stories.txt"), TextFormat::kRaw);
  EXPECT_EQ(rotq::resolve_text_format(TextFormat::kRaw, "/x/wiki.test.raw"), TextFormat::kRaw);
  EXPECT_THROW(rotq::parse_text_format("csv"), rotq::Error);
}

TEST(Text, MissingAndEmptyFilesAreErrors) {
  rotq_test::TempDir dir;
  EXPECT_THROW(rotq::read_text(dir.str("none.txt"), rotq::TextFormat::kRaw), rotq::Error);
  std::ofstream(dir.str("empty.txt")) << "  \n\n ";
  try {
    rotq::read_text(dir.str("empty.txt"), rotq::TextFormat::kRaw);
    FAIL();
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos);
  }
}

}  // namespace
